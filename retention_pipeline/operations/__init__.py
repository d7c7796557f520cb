"""Operations: the jobs (and later schedules, sensors and the webhook receiver) that run the pipeline."""

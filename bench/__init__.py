"""The benchmark behind `make bench`: every stage of the pipeline against its reference, as ratios (bench.run)."""

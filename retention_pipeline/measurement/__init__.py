"""Measurement stage: segment development, Added Revenue and holdout lift, as SQL over what the earlier stages wrote."""

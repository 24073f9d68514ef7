"""One file per revision, `rNNNN_slug.py`, chained by `down_revision`."""

"""Whole-book scoring from files, on one machine or a Dask cluster."""

"""Data: reading inputs, preprocessing, the zarr snapshot store, simulators and public datasets."""

"""Data: video decoding, flow, annotations, windows, datasets and the batch jobs over them."""

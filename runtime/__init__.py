"""Running a compiled network: the host graph (box decoding, NMS) and `run_network` (photos -> detections)."""

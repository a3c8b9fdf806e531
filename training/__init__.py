"""Fine-tuning for low latency (`snnc finetune`): ONNX -> torch importer, QCFS, dual error model (needs torch)."""

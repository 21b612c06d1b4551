"""Benchmarking ONNX models. Modules here import only the standard library, numpy and
onnxruntime, so that they run on a device without torch."""

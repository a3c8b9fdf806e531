"""Evaluation: labelled detection sets (COCO json, Pascal VOC xml, YOLO txt), mAP with a COCO evaluator, SOPs and
energy, and a small real labelled set built from scikit-learn's handwritten digits.

    datasets.py  Sample, load_dataset (layout auto-detected), write_dataset
    metrics.py   evaluate_detections (mAP@0.5, mAP@0.5:0.95), evaluate_fidelity (ANN detections as ground truth)
    energy.py    count_sops, energy_report (docs/methods.md section 8)
    digits.py    make_digits, write_digits: the digits detection set, 64x64, 10 classes
    ann.py       run_ann, ann_detections: an ONNX detector with boxes/scores outputs on a set, through onnxruntime

Modules are imported on use (scikit-learn and the COCO evaluator are needed only by digits.py and metrics.py).
"""

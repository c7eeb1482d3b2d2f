"""Fine-tuning and probing of pretrained backbones: linear_probe.py (logistic probes on embeddings),
config.py (FinetuneConfig), model.py (backbone + head), losses.py (masked losses) and trainer.py
(``finetune(FinetuneConfig) -> FinetuneResult``); above them, evaluate.py (a fine-tuned model on any
labeled data, clean and under shifts) and label_efficiency.py (sweeps of ``finetune`` over label
fractions). Metrics, plots and shifts come from the leaf ``medfound.evaluation``."""

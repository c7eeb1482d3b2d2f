"""Fine-tuning and probing of pretrained backbones: linear_probe.py (logistic probes on embeddings),
config.py (FinetuneConfig), model.py (backbone + head), losses.py (masked losses) and trainer.py
(``finetune(FinetuneConfig) -> FinetuneResult``)."""

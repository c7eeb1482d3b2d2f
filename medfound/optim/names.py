"""The names the optimisation settings accept, importable without Keras (the CLI's choices)."""

OPTIMIZERS = ("lars", "sgd", "adamw")
LR_SCALINGS = ("linear", "sqrt")

"""leantune: data- and compute-efficient LoRA fine-tuning of LLMs."""
__version__ = "0.1.0"

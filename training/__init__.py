"""Training JinaBERT the paper's way: MLM pre-training, contrastive pairs, hard negatives.

Run from the checkout (not installed): ``python -m training <config.yaml>``; see training/README.md.
"""

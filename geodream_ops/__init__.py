"""GeoDream in plain PyTorch: one module per concept of the paper. Never imports ComfyUI."""

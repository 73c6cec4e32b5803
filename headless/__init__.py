"""Run this pack's example workflows without the editor: ``python -m headless example_workflows/<name>.json``."""

"""Score distillation shared by stages 3 and 4: Stable Diffusion loading (sd_guidance, with the configs
it reads offline in configs/), the camera-conditioned LoRA eps_lora (lora), and VSD / SDS gradients
on rendered images (score_distillation)."""

"""Why the model said tumour: attribution maps on tiles (Grad-CAM or input x gradient, via Captum)."""

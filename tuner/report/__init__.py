"""What users look at: the study report (HTML), the compare grid of `tuner apply --compare`, and the image
tools both share (nearest-neighbour upscaling, difference maps)."""

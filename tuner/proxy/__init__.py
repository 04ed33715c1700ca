"""The embedded proxy model: an SD-1.5-patterned pixel-space U-Net trained on scikit-learn's digits."""

"""Constants shared by the model, data tools and adapters."""

# ImageNet statistics on the 0-255 scale, RGB order. Core-model inputs are (x - PIXEL_MEAN) / PIXEL_STD.
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)

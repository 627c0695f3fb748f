"""The segmentation model: network, preprocessing, training, inference and level labelling."""

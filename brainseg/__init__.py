"""brainseg: brain MRI lesion segmentation experiments on the LGG (kaggle_3m) dataset."""

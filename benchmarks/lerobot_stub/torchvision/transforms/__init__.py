class ToTensor:
    def __call__(self, img):
        import numpy as np
        import torch
        return torch.from_numpy(np.asarray(img)).permute(2, 0, 1).float() / 255.0

"""Trains torchvision's resnet18 (ImageNet layout, 3-channel 32-pixel input) on Fashion-MNIST with the Python API,
then saves its weights as safetensors: a teacher "from elsewhere" for the torchvision: spec."""
import sys
import time

import lightning.pytorch as pl
import torch
from safetensors.torch import save_file
from torchvision.models import resnet18

from distill import TeacherModule
from distill.data import ImageDataModule
from distill.models.teacher_view import TeacherView

epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 2
torch.manual_seed(0)
network = resnet18(num_classes=10)
view = TeacherView(network, input_size=32, normalize="imagenet", channels=3)  # what the student stage will apply
data = ImageDataModule(dataset="fashion_mnist", batch_size=128)
view.set_data_normalization(*data.normalization)
system = TeacherModule(model=view, num_classes=10, input_shape=(1, 28, 28), lr=3e-3, channels_last=False)
start = time.perf_counter()
pl.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
           default_root_dir=".").fit(system, datamodule=data)
print(f"trained {epochs} epochs in {time.perf_counter() - start:.0f} s")
save_file({k: v.contiguous() for k, v in network.state_dict().items()}, "resnet18_fmnist.safetensors")

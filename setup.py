"""sb3-expo: EXPO (Expressive Policy Optimization) for Stable-Baselines3."""

import os

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

# Registers EXPO with RL Zoo's own CLI (python -m rl_zoo3.train --algo expo): the .pth file, run at interpreter
# start-up, imports only the tiny hook module _sb3_expo_rl_zoo.py, which registers EXPO once rl_zoo3 is imported.
ZOO_HOOK_PTH = "sb3_expo_rl_zoo.pth"


class build_py_with_zoo_hook(build_py):
    """build_py that also puts the .pth file at the root of the wheel (site-packages), editable installs included."""

    def run(self) -> None:
        super().run()
        target = self.build_lib
        if getattr(self, "editable_mode", False):  # pip install -e: the wheel's root is install's install_lib
            target = self.get_finalized_command("install").install_lib
        self.copy_file(ZOO_HOOK_PTH, os.path.join(target, ZOO_HOOK_PTH), preserve_mode=False)

    def get_outputs(self, include_bytecode: bool = True) -> list:
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, ZOO_HOOK_PTH)]

with open("README.md", encoding="utf-8") as f:
    long_description = f.read()

extras = {
    # Offline datasets: reading Minari needs only h5py; writing one (the demo datasets) needs minari[create].
    "minari": ["minari[create,hdf5]>=0.5.0", "h5py>=3.8"],
    # robomimic is installed without its dependencies in .ci/run (its torchvision pin would replace a CPU torch
    # with a CUDA build); these are the light packages its dataset utilities need.
    "robomimic": ["h5py>=3.8", "psutil", "termcolor", "tensorboardX", "imageio", "imageio-ffmpeg"],
    # requests: rl_zoo3's enjoy imports it; matplotlib: the main job's learning-curve plot.
    "zoo": ["rl_zoo3>=2.3.0", "optuna", "pyyaml", "requests", "matplotlib"],
    "bench": ["matplotlib", "rliable", "pandas"],
    "mujoco": ["gymnasium[mujoco]>=1.0.0", "gymnasium-robotics>=1.3.0"],
    "tests": ["pytest", "pytest-timeout", "tensorboard", "tqdm", "rich"],
}
extras["all"] = sorted({req for reqs in extras.values() for req in reqs})
# robomimic's simulator. robosuite 1.4.1 is the release that runs here; it needs mujoco < 3.10 (1.5.x pins numpy < 2).
# Kept out of "all" because it caps mujoco for every user.
extras["robosuite"] = ["robosuite==1.4.1", "mujoco>=3.3,<3.10", "h5py>=3.8"]

setup(
    name="sb3-expo",
    version="0.1.0",
    description="EXPO (Expressive Policy Optimization) for Stable-Baselines3: diffusion base policy + Gaussian edit "
    "policy + Q ensemble, with Minari/robomimic offline data and RL Zoo training.",
    long_description=long_description,
    long_description_content_type="text/markdown",
    packages=find_packages(include=["sb3_expo", "sb3_expo.*"]),
    py_modules=["_sb3_expo_rl_zoo"],
    cmdclass={"build_py": build_py_with_zoo_hook},
    package_data={"sb3_expo": ["py.typed"]},
    python_requires=">=3.9",
    install_requires=[
        # A wide range on purpose: a GPU user must get their own CUDA build of torch.
        "torch>=2.1",
        "gymnasium>=0.29.1",
        "stable-baselines3>=2.3.0",
        "sb3-contrib>=2.3.0",
        "numpy>=1.24",
        "tqdm",
        "rich",
    ],
    extras_require=extras,
    license="MIT",
    classifiers=["Programming Language :: Python :: 3", "Topic :: Scientific/Engineering :: Artificial Intelligence"],
)

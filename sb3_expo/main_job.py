"""The main job (placeholder until the full pipeline lands): train EXPO's cpu preset on Pendulum-v1 and save it."""

from __future__ import annotations

import argparse

from sb3_expo import EXPO, get_preset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--out", default="logs/main_job/expo_pendulum.zip")
    args = parser.parse_args()
    model = EXPO("MlpPolicy", "Pendulum-v1", seed=0, verbose=1, **get_preset("cpu"))
    model.learn(args.steps, progress_bar=True)
    model.save(args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()

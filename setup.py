"""Build hook: wheels carry the shipped demo weights as ``sam2s/weights/sam2s_demo.pt``.

The weights live once in the repository, at ``bundle/models/model.pt`` (the bundle's model);
:func:`sam2s.checkpoint.demo_checkpoint_path` finds them there in a source checkout or an
editable install, and at the packaged path in an installed wheel. Everything else about the
package is declared in ``pyproject.toml``.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

DEMO_WEIGHTS = Path(__file__).resolve().parent / "bundle" / "models" / "model.pt"


class BuildWithDemoWeights(build_py):
    def run(self):
        super().run()
        if self.editable_mode:
            return  # an editable install reads bundle/models/model.pt in place
        if not DEMO_WEIGHTS.is_file():
            raise FileNotFoundError(
                f"{DEMO_WEIGHTS} is missing: a sam2s wheel ships the demo weights; check out the "
                "repository with its bundle/models folder (or `git lfs pull` if it is a pointer)"
            )
        target = Path(self.build_lib) / "sam2s" / "weights" / "sam2s_demo.pt"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DEMO_WEIGHTS, target)


setup(cmdclass={"build_py": BuildWithDemoWeights})

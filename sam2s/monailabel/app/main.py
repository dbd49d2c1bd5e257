"""The SAM2S MONAI Label app.

Run it from the project's environment (its ``bin`` first on ``PATH``)::

    monailabel start_server --app sam2s/monailabel/app --studies /path/to/images \
        --conf device cuda --host 0.0.0.0 --port 8000

See ``README.md`` beside this file for the settings and the request format.
"""

from __future__ import annotations

import logging

from monailabel.config import settings
from monailabel.datastore.local import LocalDatastore
from monailabel.interfaces.app import MONAILabelApp

import sam2s
from sam2s.data.sources import VIDEO_SUFFIXES, VOLUME_SUFFIXES
from sam2s.monailabel.infer import (
    TASKS,
    AppSettings,
    SAM2SInferTask,
    build_segmenter,
    check_infer_request,
    install_error_handlers,
)

logger = logging.getLogger(__name__)


class SAM2SApp(MONAILabelApp):
    """Serves the ``sam2s`` and ``sam2s_propagate`` infer tasks over one shared model.

    Args:
        app_dir: this folder.
        studies: the datastore: a folder of volumes, videos and images, or a DICOMweb address.
        conf: ``--conf key value`` pairs (see ``README.md``).
    """

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.sam2s_settings = AppSettings.from_conf(conf)
        self.segmenter = build_segmenter(self.sam2s_settings)  # before the base class asks for the tasks
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="SAM2S",
            description="SAM2S interactive segmentation of surgical videos and medical volumes",
            version=sam2s.__version__,
            labels=self.sam2s_settings.label_ids,
        )
        install_error_handlers()

    def init_datastore(self):
        if self.studies.startswith(("http://", "https://")):
            return super().init_datastore()
        # MONAI Label lists volumes and images only; videos are images here too.
        extensions = list(settings.MONAI_LABEL_DATASTORE_FILE_EXT)
        for suffix in (*VOLUME_SUFFIXES, *VIDEO_SUFFIXES):
            if suffix == ".dcm":  # DICOM series are folders, read through MONAI Label's DICOM support
                continue
            if f"*{suffix}" not in extensions:
                extensions.append(f"*{suffix}")
        return LocalDatastore(
            self.studies,
            extensions=extensions,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def init_infers(self):
        return {name: SAM2SInferTask(self.segmenter, propagate) for name, propagate in TASKS.items()}

    def infer(self, request, datastore=None):
        image_id = check_infer_request(request, self._infers, datastore or self.datastore())
        if image_id is not None:
            request = {**request, "image_id": image_id}  # the session key: the id, not the resolved path
        return super().infer(request, datastore)

from .hooks import *  # noqa: F401,F403
from .loops import *  # noqa: F401,F403
from .optimizers import *  # noqa: F401,F403
from .data_workers import cores_per_process, resolve_num_workers  # noqa: F401
from .train_data_check import check_device_augmentation, check_train_dataloader  # noqa: F401,E501

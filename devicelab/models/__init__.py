"""Pure data: the models of the inventory, the network profiles, the targets and results.

No I/O here; ``devicelab.config`` reads the YAML files into these models.
"""

from devicelab.models.inventory import (
    AppBuild,
    AppiumEndpoint,
    Device,
    DeviceProxy,
    Inventory,
    PowerControl,
)
from devicelab.models.network import NetworkCatalog, NetworkProfile
from devicelab.models.results import (
    SCHEMA_ID,
    AchievedNetwork,
    BackendInfo,
    Check,
    CheckTarget,
    DeviceInfo,
    NetworkInfo,
    Results,
    RunInfo,
    Series,
    Stats,
    StatusCounts,
    percentile,
    summarize,
)
from devicelab.models.targets import Target, TargetBook

__all__ = [
    "SCHEMA_ID",
    "AchievedNetwork",
    "AppBuild",
    "AppiumEndpoint",
    "BackendInfo",
    "Check",
    "CheckTarget",
    "Device",
    "DeviceInfo",
    "DeviceProxy",
    "Inventory",
    "NetworkCatalog",
    "NetworkInfo",
    "NetworkProfile",
    "PowerControl",
    "Results",
    "RunInfo",
    "Series",
    "Stats",
    "StatusCounts",
    "Target",
    "TargetBook",
    "percentile",
    "summarize",
]

"""Pure data: the models of the inventory, the network profiles, the targets and results
(and what the proxy and the backend checks report beside them).

No I/O here; ``devicelab.config`` reads the YAML files into these models.
"""

from devicelab.models.backend_findings import ConnectionRoom, IndexRecommendation
from devicelab.models.inventory import (
    AppBuild,
    AppiumEndpoint,
    Device,
    DeviceProxy,
    Inventory,
    PowerControl,
)
from devicelab.models.network import NetworkCatalog, NetworkProfile
from devicelab.models.proxy_status import ProxyStatus
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
    "ConnectionRoom",
    "Device",
    "DeviceInfo",
    "DeviceProxy",
    "IndexRecommendation",
    "Inventory",
    "NetworkCatalog",
    "NetworkInfo",
    "NetworkProfile",
    "PowerControl",
    "ProxyStatus",
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

"""Test lab: a private real containerd with CRI, deterministic local images, a CRI
gRPC client (to build scenarios) and garbage scenarios. The lab is driven by the real
crictl (``find_crictl``), never by a look-alike.

Test-only: nothing under plugins/ may import or call any of this."""

from .lab import (Lab, SANDBOX_IMAGE, CRICTL_ENV, CONTAINERD2_ENV, containerd_version,  # noqa: F401
                  crictl_version, find_crictl)
from .cri import CRIClient, CRIError  # noqa: F401
from .scenario import scenario, feas, reset, big, min_age_between  # noqa: F401
from . import images  # noqa: F401
from . import pods  # noqa: F401
from .pods import Unsupported  # noqa: F401

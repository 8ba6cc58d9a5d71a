"""Test lab: a private real containerd with CRI, deterministic local images, a CRI
gRPC client, garbage scenarios and a test-only crictl stand-in (``bin/crictl``).

Test-only: nothing under plugins/ may import or call any of this."""

from .lab import Lab, BIN_DIR, SANDBOX_IMAGE, containerd_version  # noqa: F401
from .cri import CRIClient, CRIError  # noqa: F401
from .scenario import scenario, feas, reset, big, min_age_between  # noqa: F401
from . import images  # noqa: F401

CRICTL = BIN_DIR + "/crictl"

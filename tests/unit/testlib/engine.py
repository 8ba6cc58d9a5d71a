# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Engines over a stub runner, the fake node discovery and a fixed clock."""

from ansible_collections.nodemaint.image_gc.plugins.module_utils import _engine, _phases

from .discovery import node_discovery
from .fixtures import NOW_NS

# Where peer-mirror detection looks unless a test gives a root: nothing is there.
NO_PEER_ROOT = '/nonexistent-peer-root'


def stub_engine(runner, settings, phases, labels=None, clock_ns=NOW_NS, peer_root=None, discovery=None):
    """An Engine as the modules and the runner build it, but over ``runner``, ``discovery`` (the
    recorded node's by default), a wall clock fixed at ``clock_ns`` and peer-mirror detection
    under ``peer_root``."""
    return _engine.Engine(settings, phases, labels=labels, runner=runner, discovery=discovery or node_discovery(),
                          clock=lambda: clock_ns, peer_mirror_root=str(peer_root or NO_PEER_ROOT))


def make_engine(runner, settings=None, phases=None, clock_ns=NOW_NS, peer_root=NO_PEER_ROOT, discovery=None):
    """An Engine over ``runner``; ``phases`` defaults to all four and the disk report.

    ``image_min_age`` is 0s unless ``settings`` say otherwise: the recorded content stores say
    their manifests are seconds old (``ctr content ls`` AGE), so the default (10m) keeps every
    image (test_default_image_min_age_keeps_the_recorded_fresh_images shows it). ``image_unused_for``
    is 0s unless ``settings`` say otherwise, for the same reason: the recorded images were never seen
    in use before, and the default (21d) keeps an image first seen less than 21 days ago; the
    recorded sequence is every unused image removed (test_default_image_unused_for_keeps_the_recorded_images shows
    the default).

    ``pod_aware`` is false unless ``settings`` say otherwise: the recorded sequence (and the
    "after" states derived from it) is upstream's blunt removal of every exited container, exit1
    of the Ready pod feas-c included. The default rules are tested with ``pod_aware: True`` in
    test__engine.py (``pod_engine``), test__plan.py and test__node.py."""
    if phases is None:
        phases = ('containers', 'sandboxes', 'images', 'content', 'disk')
    settings = dict({'image_min_age': '0s', 'image_unused_for': '0s', 'pod_aware': False}, **(settings or {}))
    return stub_engine(runner, settings, phases, clock_ns=clock_ns, peer_root=peer_root, discovery=discovery)


def run_phase(engine, name, check_mode=False):
    """One phase of ``engine``, outside the run loop (no skip rules; an exception raises)."""
    return dict(_phases.PHASE_TABLE)[name](engine, check_mode)


def ids(items):
    return [item['id'] for item in items]

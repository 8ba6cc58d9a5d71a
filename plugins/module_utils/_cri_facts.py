# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the nodemaint.image_gc collection. It may change without notice.
# It must not import Ansible (the node-side runner uses it with the standard library only).
"""What the runtime says about itself, asked once per run: its name (``crictl version``),
``crictl info``, the sandbox image(s) and the CRI's snapshotters (with the disk report's
``crictl imagefsinfo`` when there was one)."""

import threading

from ._common import CommandError, ImageGCError
from . import _refs, _snapshotters


class CriFacts:
    """The runtime's own facts for one run, each asked at most once through ``crictl`` (a
    _cri.Crictl). ``sandbox_image``: the ``sandbox_image`` setting (added to what crictl info
    reports). ``fsinfo``: the latest ``crictl imagefsinfo``, set by the disk report (None: none).
    Safe to ask from several threads (the disk report asks side by side): each fact is still asked
    once."""

    def __init__(self, crictl, sandbox_image=None):
        self.crictl = crictl
        self._lock = threading.RLock()   # crictl info and what is read from it
        self._name_lock = threading.Lock()   # crictl version: asked beside crictl info
        self.sandbox_image_setting = sandbox_image
        self.fsinfo = None
        self._sandbox_image = None
        self._runtime_name = None
        self._info = None                # crictl info, asked once
        self._snapshotters = None        # (Snapshotters or None, the exception that kept them unknown)

    def runtime_name(self):
        """The runtime behind the endpoint as ``crictl version`` names it (``containerd``, ``cri-o``),
        asked once per engine; '' when crictl cannot tell (then nothing runtime-specific applies)."""
        with self._name_lock:
            if self._runtime_name is None:
                try:
                    self._runtime_name = self.crictl.runtime_name()
                except Exception:  # pylint: disable=broad-except  # the phases report crictl's failure
                    self._runtime_name = ''
            return self._runtime_name

    def is_crio(self):
        """CRI-O: no content store (phase 4 does not apply), no ctr, images in containers/storage."""
        return self.runtime_name() == 'cri-o'

    def sandbox_images(self, images=()):
        """The sandbox images, a list: the ``sandbox_image`` setting added to
        what ``crictl info`` reports. ``crictl info`` is asked once per engine, and not when the
        runtime pins an image that looks like a sandbox image (containerd 1.7 and 2.x pin their
        sandbox image, and 2.x does not report it); any other pinned image says nothing about it."""
        names = [self.sandbox_image_setting] if self.sandbox_image_setting else []
        with self._lock:
            if self._sandbox_image is None:
                if _refs.pins_a_sandbox_image(images):
                    return names
                self._sandbox_image = self.crictl.sandbox_image(self.cri_info()) or ''
        if self._sandbox_image and self._sandbox_image not in names:
            names.append(self._sandbox_image)
        return names

    def cri_info(self):
        """``crictl info`` (a dict), asked once per engine; raises as Crictl.info does."""
        with self._lock:
            if self._info is None:
                self._info = self.crictl.info()
            return self._info

    def snapshotters(self):
        """``(snapshotters, exc)``: the CRI's snapshotters (_snapshotters.Snapshotters; None when
        ``crictl info`` shows no containerd CRI config, or could not be read: ``exc`` then says
        why) from ``crictl info`` and ``crictl imagefsinfo`` (the disk report's, when there was
        one); asked once per engine."""
        with self._lock:
            if self._snapshotters is None:
                try:
                    info = self.cri_info()
                except (CommandError, ImageGCError) as exc:
                    self._snapshotters = (None, exc)
                    return self._snapshotters
                try:
                    fsinfo = self.fsinfo if self.fsinfo is not None else self.crictl.imagefsinfo()
                except (CommandError, ImageGCError):
                    fsinfo = {}              # the snapshotters crictl info names are still known
                self._snapshotters = (_snapshotters.cri_snapshotters(info, fsinfo), None)
            return self._snapshotters

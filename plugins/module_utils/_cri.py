# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the nodemaint.image_gc collection. It may change without notice.
# It must not import Ansible (the node-side runner uses it with the standard library only).
"""Listing and removal through crictl and ctr (Crictl, Ctr): batched argv calls, a failed batch
re-listed once, failures described; what they list is parsed by _listings (JSON parsed, never
grepped)."""

import json
import re

from ._common import CommandError, ImageGCError
from ._listings import (CONTAINER_MARKS, Container, Image, ListingShapeError, Sandbox, parse_content_ls,
                        parse_image_volumes, parse_runtime_name, slim_hook)

_FATAL_RE = re.compile(r'level=(?:fatal|error) msg="((?:[^"\\]|\\.)*)"')


def error_lines(stderr):
    """The ``level=fatal``/``level=error`` messages of a crictl stderr (warnings are not failures)."""
    found = [m.group(1).replace('\\"', '"') for m in _FATAL_RE.finditer(stderr or '')]
    if found:
        return found
    return [line for line in (stderr or '').splitlines() if line.strip() and 'level=warning' not in line
            and 'level=info' not in line and 'level=debug' not in line]


def describe_failure(result, what):
    lines = error_lines(result.stderr)
    detail = lines[-1] if lines else (result.stderr.strip() or 'exit code %d, no message' % result.rc)
    if result.rc == 127:
        return '%s failed: %s. Is the binary installed? Set crictl_path/ctr_path.' % (what, detail)
    if result.rc == 124:
        return '%s failed: %s. Raise the timeout option, or check containerd.' % (what, detail)
    if 'connect: no such file' in detail or 'connection refused' in detail or 'validate service connection' in detail \
            or 'failed to dial' in detail or 'cannot access socket' in detail:
        return ('%s failed: %s. The runtime socket does not answer: is containerd running? Set '
                'runtime_endpoint / containerd_address to the right socket.' % (what, detail))
    return '%s failed (rc=%d): %s' % (what, result.rc, detail)


class BatchOutcome:
    """Per-item result of a batched removal."""

    def __init__(self):
        self.removed = []       # ids
        self.failed = {}        # id -> message
        self.gone = []          # ids that were already gone (removed by someone else)
        self.skipped = {}       # id -> why it was left out of its batch (before_batch)
        self.commands = []


class Crictl:
    def __init__(self, runtime, runner, batch_size):
        if int(batch_size) < 1:
            raise ImageGCError('batch_size must be 1 or more, got %r' % (batch_size,))
        self.runtime = runtime
        self.runner = runner
        self.batch_size = int(batch_size)

    def _run(self, *args):
        argv = self.runtime.crictl_argv(*args)
        return self.runner.run(argv, timeout=self.runtime.timeout + 30)

    def _json(self, *args, **kw):
        """The JSON object crictl ARGS prints; ``object_hook`` (keyword) is json.loads's."""
        result = self._run(*args)
        what = 'crictl %s' % ' '.join(args)
        if result.rc != 0:
            raise CommandError(describe_failure(result, what), result)
        try:
            data = json.loads(result.stdout, object_hook=kw.get('object_hook'))
            if not isinstance(data, dict):
                raise ValueError('not a JSON object')
        except ListingShapeError as exc:
            result.stdout = ''
            raise ImageGCError('crictl %s: unexpected JSON shape (%s); this crictl may be too old or not crictl '
                               'at all' % (args[0], exc))
        except ValueError as exc:
            raise CommandError('%s printed malformed JSON (%s): %r. Is %s really crictl?'
                               % (what, exc, result.stdout[:200], ' '.join(self.runtime.crictl)), result)
        result.stdout = ''               # the runner's history keeps the result for the run: not its answer
        return data

    def _parse(self, data, key, cls, what):
        try:
            return [item if isinstance(item, cls) else cls(item) for item in (data.get(key) or [])]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ImageGCError('crictl %s: unexpected JSON shape (%s: %s); this crictl may be too old '
                               'or not crictl at all' % (what, type(exc).__name__, exc))

    # Container states in the order a container goes through them: listed one state after the other,
    # a container that changes state meanwhile is still seen (in its later state) at least once.
    STATES = ('created', 'running', 'exited', 'unknown')

    def containers(self, reuse=None):
        """Every container. A listing too big for one gRPC message (crictl's client takes 16 MiB,
        containerd sends ``[grpc] max_send_message_size``, 16 MiB by default: about 19,000
        containers as the kubelet makes them) is read in parts: per state, and a state still too
        big per pod sandbox. ``reuse``: {id: Container} of an earlier listing, whose unchanged
        containers are given back as they are (_listings.slim_hook)."""
        try:
            return self._containers(reuse=reuse)
        except CommandError as exc:
            if not too_big(exc.result):
                raise
        seen = {}
        for state in self.STATES:
            try:
                parts = [self._containers('--state', state, reuse=reuse)]
            except CommandError as exc:
                if not too_big(exc.result):
                    raise
                parts = [self._containers('--state', state, '--pod', pod, reuse=reuse) for pod in self._sandbox_ids()]
            for part in parts:
                for c in part:
                    seen[c.id] = c          # the latest state seen
        return list(seen.values())

    def _containers(self, *filters, reuse=None):
        # Each entry becomes a Container as soon as it is parsed (slim_hook): at 10,000 containers
        # the listing's parsed dicts (labels and annotations included) were the runner's largest
        # holding; the text itself is dropped by _json right after the parse.
        data = self._json('ps', '--all', *(filters + ('--output', 'json')),
                          object_hook=slim_hook(Container, CONTAINER_MARKS, reuse))
        return self._parse(data, 'containers', Container, 'ps')

    def _sandbox_ids(self):
        try:
            return sorted(s.id for s in self.sandboxes())
        except CommandError as exc:
            if not too_big(exc.result):
                raise
        return sorted(s.id for state in ('ready', 'notready') for s in self._parse(
            self._json('pods', '--state', state, '--output', 'json'), 'items', Sandbox, 'pods'))

    def sandboxes(self):
        return self._parse(self._json('pods', '--output', 'json'), 'items', Sandbox, 'pods')

    def images(self):
        return self._parse(self._json('images', '--output', 'json'), 'images', Image, 'images')

    def imagefsinfo(self):
        return self._json('imagefsinfo', '--output', 'json')

    def info(self):
        return self._json('info', '--output', 'json')

    def runtime_name(self):
        """The runtime's name as ``crictl version`` says it (``RuntimeName:``): ``containerd``,
        ``cri-o``; '' when it does not say."""
        result = self._run('version')
        if result.rc != 0:
            raise CommandError(describe_failure(result, 'crictl version'), result)
        return parse_runtime_name(result.stdout)

    def sandbox_image(self, info=None):
        """The runtime's sandbox (pause) image as ``crictl info`` (``info``: its output, else asked
        now) reports it (containerd 1.6/1.7), or None."""
        config = (info if info is not None else self.info()).get('config')
        if isinstance(config, dict):
            return config.get('sandboxImage') or config.get('sandbox_image') or None
        return None

    # Containers per ``crictl inspect`` for the image volumes: crictl holds every answer of one
    # process in memory before it prints (about 2.5 KB a container with --quiet, tens of KB
    # without it, the verbose info being the runtime spec): a bounded batch keeps its memory,
    # and ours, bounded whatever the number of containers.
    INSPECT_BATCH = 500

    def image_volumes(self, ids):
        """{container id: [image reference...]}: the images each of ``ids`` mounts as an image
        volume (``status.mounts[].image``, KEP-4639), from ``crictl inspect --quiet ID...`` in
        batches of INSPECT_BATCH. ``--quiet`` leaves out the verbose ``info`` (the container's
        whole runtime spec, most of the answer), which the status's mounts do not need; each
        batch's answer is parsed and dropped before the next."""
        out = {}
        for start in range(0, len(ids), self.INSPECT_BATCH):
            out.update(self._inspect_volumes(list(ids[start:start + self.INSPECT_BATCH])))
        return out

    # A batch asked again at most this many times when containers of it went meanwhile.
    INSPECT_RETRIES = 3

    def _inspect_volumes(self, batch):
        """One batch of ``image_volumes``. A container removed between the listing and the
        inspect (the kubelet's own container GC, which under disk pressure runs every 10 s, or a
        pod deleted) fails the whole ``crictl inspect`` ("not found"): the containers are listed
        again and the batch is asked again without those that went (they mount nothing any more:
        ``[]``; a container made meanwhile is the re-check's before each removal batch), up to
        INSPECT_RETRIES times. Any other failure, or a "not found" while every container of the
        batch is still listed, raises: no image is removed while the image volumes are unknown."""
        gone = []
        for attempt in range(self.INSPECT_RETRIES + 1):
            result = self._run('inspect', '--quiet', '--output', 'json', *batch)
            what = 'crictl inspect (%d containers, for their image volumes)' % len(batch)
            if result.rc == 0:
                break
            failure = CommandError(describe_failure(result, what) + '; no image is removed while the image volumes '
                                   'of the containers are unknown', result)
            errors = error_lines(result.stderr)
            if attempt == self.INSPECT_RETRIES or not (errors and _not_found(errors[-1])):
                raise failure
            try:
                listed = {c.id for c in self.containers()}
            except (CommandError, ImageGCError):
                raise failure
            went = [i for i in batch if i not in listed]
            if not went:
                raise failure
            gone.extend(went)
            batch = [i for i in batch if i in listed]
            if not batch:
                return {i: [] for i in gone}
        try:
            data = json.loads(result.stdout)
        except ValueError as exc:
            raise CommandError('%s printed malformed JSON (%s): %r' % (what, exc, result.stdout[:200]), result)
        result.stdout = ''           # the runner's history keeps the result: not its answer
        out = {i: [] for i in gone}
        out.update(parse_image_volumes(data if isinstance(data, list) else [data], what))
        del data
        return out

    # -- removals -----------------------------------------------------------------------------
    def _remove(self, verb, ids, listing, before_batch=None):
        """Batched ``crictl VERB id...``; on a failed batch one re-listing classifies each item.

        ``before_batch(batch)`` -> {id: reason} is asked right before each batch runs; those ids
        are left out of it (recorded in ``skipped``)."""
        outcome = BatchOutcome()
        for start in range(0, len(ids), self.batch_size):
            batch = list(ids[start:start + self.batch_size])
            if before_batch:
                outcome.skipped.update(before_batch(batch))
                batch = [i for i in batch if i not in outcome.skipped]
                if not batch:
                    continue
            result = self._run(verb, *batch)
            outcome.commands.append(result.argv)
            if result.rc == 0:
                outcome.removed.extend(batch)
                continue
            errors = error_lines(result.stderr)
            if result.rc == 127:
                for item in batch:
                    outcome.failed[item] = describe_failure(result, 'crictl %s' % verb)
                continue
            try:
                still_there = set(listing())
            except (ImageGCError, CommandError) as exc:
                for item in batch:
                    outcome.failed[item] = 'crictl %s failed and the state could not be re-read: %s' % (verb, exc)
                continue
            for item in batch:
                mentions = [e for e in errors if item in e]
                if item not in still_there:
                    if mentions and _not_found(mentions[-1]):
                        outcome.gone.append(item)
                    else:
                        outcome.removed.append(item)
                else:
                    outcome.failed[item] = mentions[-1] if mentions else describe_failure(result, 'crictl %s' % verb)
        return outcome

    def remove_containers(self, ids):
        return self._remove('rm', ids, lambda: [c.id for c in self.containers()])

    def remove_sandboxes(self, ids):
        return self._remove('rmp', ids, lambda: [s.id for s in self.sandboxes()])

    def remove_images(self, ids, before_batch=None):
        return self._remove('rmi', ids, lambda: [i.id for i in self.images()], before_batch)


def too_big(result):
    """True when a listing failed because its answer exceeds a gRPC message size limit (the
    client's receive or the runtime's send limit): gRPC's ResourceExhausted."""
    return result.rc != 0 and ('ResourceExhausted' in result.stderr or 'larger than max' in result.stderr)


def _not_found(message):
    lowered = message.lower()
    return 'not found' in lowered or 'notfound' in lowered or 'no such' in lowered


class Ctr:
    def __init__(self, runtime, runner, namespace):
        self.runtime = runtime
        self.runner = runner
        self.namespace = namespace

    def _run(self, *args):
        return self.runner.run(self.runtime.ctr_argv(self.namespace, *args), timeout=self.runtime.timeout + 30)

    def content(self):
        """Blobs of the namespace's content store, parsed from ``ctr content ls`` (tab separated)."""
        result = self._run('content', 'ls')
        if result.rc != 0:
            raise CommandError(describe_failure(result, 'ctr content ls'), result)
        return parse_content_ls(result.stdout)

    def images_check(self, snapshotter, names=None):
        """``ctr images check --snapshotter SNAPSHOTTER [name=="NAME"...]``: per image name, whether
        its content is complete and whether it is unpacked in that snapshotter (the table, as
        printed); of the image names ``names`` only (one filter each: ctr matches any), every image
        when it is None. ctr reads each image's manifests for it, a few ms a name."""
        filters = ['name==%s' % json.dumps(name) for name in names] if names is not None else []
        result = self._run('images', 'check', '--snapshotter', snapshotter, *filters)
        if result.rc != 0:
            raise CommandError(describe_failure(result, 'ctr images check'), result)
        return result.stdout

    def prune_references(self, dry_run=False):
        args = ['content', 'prune', 'references'] + (['--dry'] if dry_run else [])
        result = self._run(*args)
        if result.rc != 0:
            raise CommandError(describe_failure(result, 'ctr ' + ' '.join(args)), result)
        return result

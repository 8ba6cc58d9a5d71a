# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The recorded node as a stateful stub: listings answer "before" until the matching removal
ran, then "after", the way the recorded sequence went."""

import json
import os

from .fixtures import (
    Reply, crictl_warning, derived_pods_after, derived_ps_after, fixture_path, json_reply, recorded_reply,
    rmi_deleted_output)
from .stub_runner import StubRunner, command_key


def inspect_reply(version, ids, volumes=None):
    """``crictl inspect --output json ID...``: DERIVED from the recorded shape (crictl 1.37 against
    a lab, by hand): one ID prints one object, several print a JSON array; each entry's
    ``status.mounts[].image.image`` names an image volume. ``volumes``: {id: [image ref...]}."""
    entries = []
    for cid in ids:
        mounts = [{'containerPath': '/volume%d' % n, 'hostPath': '', 'readonly': True, 'image': {'image': ref}}
                  for n, ref in enumerate((volumes or {}).get(cid, ()))]
        entries.append({'status': {'id': cid, 'mounts': mounts}, 'info': {}})
    return Reply(0, json.dumps(entries[0] if len(entries) == 1 else entries), crictl_warning(version))


def images_check_reply(images_json, unusable=(), argv=()):
    """``ctr images check --snapshotter overlayfs [name=="NAME"...]``: DERIVED from the shape recorded
    in tests/fixtures/ctr-images-check/ (a space-aligned table; the CRI's own ``sha256:<id>`` name
    listed beside the image's tags and digests): every image of ``images_json`` (crictl images)
    complete and unpacked, but those in ``unusable`` (ids): incomplete (2/3) and not unpacked.
    With ``name==`` filters in ``argv`` (ctr's: any of them matches), only the names they give."""
    wanted = {json.loads(a[len('name=='):]) for a in argv if a.startswith('name==')}
    rows = []
    for image in json.loads(images_json)['images']:
        bad = image['id'] in unusable
        for name in (image.get('repoTags') or []) + (image.get('repoDigests') or []) + [image['id']]:
            if wanted and name not in wanted:
                continue
            rows.append((name, 'incomplete (2/3)' if bad else 'complete (3/3)', 'false' if bad else 'true'))
    width = max([len(r[0]) for r in rows] + [3]) + 1
    mt = 'application/vnd.oci.image.manifest.v1+json'
    digest = 'sha256:' + '0' * 64
    lines = ['%-*s%-43s%-72s%-17s%-16s%s ' % (width, 'REF', 'TYPE', 'DIGEST', 'STATUS', 'SIZE', 'UNPACKED')]
    for name, status, unpacked in rows:
        lines.append('%-*s%-43s%-72s%-17s%-16s%s' % (width, name, mt, digest, status, '1.9 MiB/1.9 MiB', unpacked))
    return Reply(0, '\n'.join(lines) + '\n', '')


def node_runner(version, state='before'):
    """A stub that plays the recorded sequence of ``version``.

    ``state='before'``: listings are the recorded "before" files until the matching removal ran,
    then the "after" ones (ps/pods DERIVED as described in derived_ps_after/derived_pods_after;
    images-after.json, ctr-content-ls-after-rmi.txt and -after-prune.txt recorded).
    ``state='after'``: every listing is the "after" one, as on a second run.
    """
    ps_before = recorded_reply(version, 'ps-a.json')
    ps_after = json_reply(version, derived_ps_after(version))
    pods_before = recorded_reply(version, 'pods.json')
    pods_after = json_reply(version, derived_pods_after(version))
    images_before = recorded_reply(version, 'images.json')
    images_after = recorded_reply(version, 'images-after.json')
    crio = not os.path.exists(fixture_path(version, 'ctr-content-ls.txt'))  # CRI-O: no content store
    if not crio:
        content_before = recorded_reply(version, 'ctr-content-ls.txt')
        content_after_rmi = recorded_reply(version, 'ctr-content-ls-after-rmi.txt')
        content_after_prune = recorded_reply(version, 'ctr-content-ls-after-prune.txt')
    after = state == 'after'

    def ps(argv, runner):
        gone = after or runner.ran('crictl', 'rm') or runner.ran('crictl', 'rmp')
        return ps_after if gone else ps_before

    def pods(argv, runner):
        return pods_after if after or runner.ran('crictl', 'rmp') else pods_before

    def images(argv, runner):
        return images_after if after or runner.ran('crictl', 'rmi') else images_before

    def content(argv, runner):
        if after or [a for a in runner.ran('ctr', 'content', 'prune', 'references') if '--dry' not in a]:
            return content_after_prune
        if runner.ran('crictl', 'rmi'):
            return content_after_rmi
        return content_before

    def images_check(argv, runner):
        return images_check_reply(images(argv, runner).out, argv=argv)

    def rm(argv, runner):
        # DERIVED from rm.out: crictl prints each removed id on stdout.
        ids = list(command_key(argv)[2:])
        return Reply(0, '\n'.join(ids) + '\n', crictl_warning(version))

    def rmp(argv, runner):
        # DERIVED from rmp.out: "Removed sandbox ID" per id.
        ids = list(command_key(argv)[2:])
        return Reply(0, ''.join('Removed sandbox %s\n' % i for i in ids), crictl_warning(version))

    def rmi(argv, runner):
        return Reply(0, rmi_deleted_output(version, command_key(argv)[2:]), crictl_warning(version))

    def inspect(argv, runner):
        return inspect_reply(version, command_key(argv)[4:])

    if crio:
        # ctr against CRI-O's socket, as recorded (no content service): a run that calls it shows it.
        # `crictl version` names CRI-O (the containerd stubs leave it out: the engine then names no
        # runtime, and their command histories stay as recorded)
        ctr = {'ctr': recorded_reply(version, 'ctr-nocontent'),
               'crictl version': recorded_reply(version, 'version.txt')}
    else:
        ctr = {'ctr content ls': content,
               'ctr images check': images_check,
               'ctr content prune references --dry': recorded_reply(version, 'ctr-prune-dry'),
               'ctr content prune references': recorded_reply(version, 'ctr-prune')}
    return StubRunner(dict({
        'crictl ps --all --output json': ps,
        'crictl pods --output json': pods,
        'crictl images --output json': images,
        'crictl imagefsinfo --output json': recorded_reply(version, 'imagefsinfo.json'),
        'crictl info --output json': recorded_reply(version, 'info.json'),
        'crictl rm': rm,
        'crictl rmp': rmp,
        'crictl rmi': rmi,
        'crictl inspect': inspect,
    }, **ctr))

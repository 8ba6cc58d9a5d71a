"""Guards on the real containerd of the lab, with the engine run in-process so that a test hook
can act between the plan and the removal (issue 12):

- a container created from an image after the plan was made keeps that image (containerd's CRI
  would remove it: rmi of an image in use succeeds);
- a runtime that neither reports nor pins its sandbox image: the pause image survives;
- with the defaults, an image imported seconds before the run survives (image_min_age 10m).
"""

import json
import os
import sys

import pytest

from tests.lab_tests.ansible_play import (
    EXCLUDE, FRESH_IMAGES, collections_path, run_tasks, runtime_args, runtime_state, state_args)
from tests.lab.scenario import run_container, run_pod

if collections_path() not in sys.path:            # the collection as ansible_collections.nodemaint.image_gc
    sys.path.insert(0, collections_path())

from ansible_collections.nodemaint.image_gc.plugins.module_utils._common import CommandResult, CommandRunner  # noqa: E402
from ansible_collections.nodemaint.image_gc.plugins.module_utils._engine import Engine  # noqa: E402


class HookRunner(CommandRunner):
    """The real CommandRunner, with ``after(argv, result) -> result or None`` called after each command."""

    def __init__(self, after):
        super(HookRunner, self).__init__()
        self.after = after

    def run(self, argv, timeout=None):
        result = super(HookRunner, self).run(argv, timeout)
        return self.after(argv, result) or result


def _verb(argv):
    return argv[argv.index('--timeout') + 2] if '--timeout' in argv else None


def test_a_container_created_after_the_plan_keeps_its_image(lab, scenario):
    unused = scenario['images']['unused3']
    created = []

    def after(argv, result):
        # the plan has its image listing; before any rmi, the kubelet creates a container from unused:3
        if _verb(argv) == 'images' and not created:
            pod, cfg = run_pod(lab, 'feas-late')
            created.append(run_container(lab, pod, cfg, 'late', unused['name'],
                                         ['/bin/busybox', 'sleep', '3600']))
    runner = HookRunner(after)
    settings = dict(runtime_args(lab), image_exclude=EXCLUDE, containers=False,
                    image_record_path=state_args(lab)['image_record_path'], **FRESH_IMAGES)
    result = Engine(settings, ('images',), runner=runner).run()['phases'][0]
    assert created, ('the hook did not run', result.get('error'))
    assert result['status'] == 'ok', result
    kept = dict((i['id'], i['reason']) for i in result['kept'])
    assert kept[unused['id']] == 'in use by container late (%s), created after the plan was made' % created[0][:13]
    rmi = [r.argv for r in runner.history if _verb(r.argv) == "rmi"]
    assert rmi and all(unused['id'] not in argv for argv in rmi)
    after_state = runtime_state(lab)
    assert unused['id'] in after_state['images']
    assert scenario['images']['busybox1']['id'] not in after_state['images']      # the plan still ran


@pytest.mark.matrix  # pinned on 1.7 and 2.x, not on 1.6
def test_pause_image_survives_when_the_runtime_does_not_name_it(lab, scenario):
    pause = scenario['images']['pause']

    def after(argv, result):
        if _verb(argv) == 'info':              # a runtime that does not report its sandbox image
            data = json.loads(result.stdout)
            (data.get('config') or {}).pop('sandboxImage', None)
            return CommandResult(result.argv, result.rc, json.dumps(data), result.stderr)
        return None
    settings = dict(runtime_args(lab), image_exclude=EXCLUDE, sandbox_min_age='0s',
                    image_record_path=state_args(lab)['image_record_path'], **FRESH_IMAGES)
    run = Engine(settings, ('containers', 'sandboxes', 'images'), runner=HookRunner(after)).run()
    images = run['phases'][2]
    assert images['status'] == 'ok' and images['sandbox_image'] is None
    kept = dict((i['id'], i['reason']) for i in images['kept'])
    assert pause['pinned'] is lab.pins_sandbox_image
    if pause['pinned']:
        assert kept[pause['id']] == 'pinned by the runtime'          # containerd 1.7 and 2.x pin it
    else:
        assert kept[pause['id']].startswith('looks like a sandbox (pause) image')
        assert any('set sandbox_image' in w for w in images['warnings'])
    assert pause['id'] in runtime_state(lab)['images']
    assert scenario['images']['unused3']['id'] not in runtime_state(lab)['images']


def test_an_image_imported_seconds_ago_survives_the_defaults(lab, scenario):
    """No image_min_age given: the module's default (10m) keeps every image the lab imported
    moments ago, though the exited containers, stale sandboxes and their blobs still go. Image age
    counts from when the last-use record first saw the image (the kubelet's firstDetected): with
    no record (removed here: an earlier test's run may have seen these same image ids) that is now."""
    args = dict(runtime_args(lab), **state_args(lab))
    if os.path.exists(args['image_record_path']):
        os.remove(args['image_record_path'])
    args.update(image_exclude=EXCLUDE, sandbox_min_age='0s')
    before = runtime_state(lab)
    res = run_tasks(lab, [('defaults', 'nodemaint.image_gc.prune', args)])
    result = res['defaults']
    assert not result.get('failed'), result
    assert result['images'] == []
    kept = dict((i['id'], i['reason']) for i in result['images_kept'])
    unused = scenario['images']['unused3']['id']
    assert kept[unused].startswith('younger than image_min_age 10m (first seen '), kept[unused]
    assert kept[unused].endswith(' ago, per the last-use record)'), kept[unused]
    assert result['containers'] and result['sandboxes']
    assert runtime_state(lab)['images'] == before['images']

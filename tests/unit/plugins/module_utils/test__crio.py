# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""CRI-O nodes (issue 28) on the recording of crictl 1.37.0 against CRI-O 1.34.0
(tests/fixtures/crictl-1.37.0_crio-1.34.0): discovery with zero configuration, the runtime named,
phases 1-3 as on containerd, phase 4 skipped as not applicable without ctr, image_min_age without a
content store, and the parsing of what CRI-O prints differently (imageRef, ids, crictl info)."""

import json

from ansible_collections.nodemaint.image_gc.plugins.module_utils import _listings, _refs
from ansible_collections.nodemaint.image_gc.plugins.module_utils._discovery import Discovery

from tests.unit.image_gc_testlib import fake_discovery
from tests.unit.image_gc_testlib import ids, stub_engine
from tests.unit.image_gc_testlib import CRICTL, CRIO_IDS, CRIO_NOW_NS, CRIO_SOCKET, V21, VCRIO, fixture_json, fixture_text
from tests.unit.image_gc_testlib import node_runner

NOT_APPLICABLE = ('not applicable: CRI-O has no content store (its images live in containers/storage, with no '
                  'compressed layer blobs for ctr to prune)')


def crio_node(ctr=False, sockets=(CRIO_SOCKET,)):
    """A CRI-O node as it comes: crictl in /usr/local/bin, CRI-O on its default socket, no ctr
    (``ctr``: Debian's ctr installed anyway), nothing configured."""
    return fake_discovery(env={'PATH': '/usr/local/bin:/usr/bin'},
                          executables={CRICTL} | ({'/usr/bin/ctr'} if ctr else set()), sockets=set(sockets))


def crio_engine(settings=None, phases=('containers', 'sandboxes', 'images', 'content'), discovery=None, tmp=None):
    runner = node_runner(VCRIO)
    # the recorded images are new to the record: with the default image_unused_for (21d) none would
    # go; these tests are about the runtime, the retention policy's default is test__engine's
    s = dict({'pod_aware': False, 'image_unused_for': '0s'}, **(settings or {}))
    if tmp is not None:
        s['image_record_path'] = str(tmp / 'images.json')
    return runner, stub_engine(runner, s, phases, clock_ns=CRIO_NOW_NS, discovery=discovery or crio_node())


def by_phase(run):
    return {r['phase']: r for r in run['phases']}


# -- parsing ---------------------------------------------------------------------------------

def test_crictl_version_names_the_runtime():
    assert _listings.parse_runtime_name(fixture_text(VCRIO, 'version.txt')) == 'cri-o'
    assert _listings.parse_runtime_name(fixture_text(V21, 'version.txt')) == 'containerd'
    assert _listings.parse_runtime_name('') == ''


def test_a_crio_container_is_matched_to_its_image_by_image_id_not_by_its_repo_digest_image_ref():
    containers = [_listings.Container(c) for c in fixture_json(VCRIO, 'ps-a.json')['containers']]
    images = [_listings.Image(i) for i in fixture_json(VCRIO, 'images.json')['images']]
    exit0 = [c for c in containers if c.name == 'exit0'][0]
    assert exit0.image_ref.startswith('docker.io/feas/busybox@sha256:')   # CRI-O: a repo digest reference
    assert exit0.image_id == CRIO_IDS['busybox1_old']                       # ... and the id apart
    users = _refs.image_users(images, containers)
    assert sorted(c.name for c in users[CRIO_IDS['busybox1_old']]) == ['exit0', 'exit1']
    assert [c.name for c in users[CRIO_IDS['busybox2']]] == ['sleeper']
    # without imageId, the repo digest reference still finds it (as crictl rmi --prune does)
    for c in containers:
        c.image_id = ''
    assert sorted(c.name for c in _refs.image_users(images, containers)[CRIO_IDS['busybox1_old']]) == ['exit0', 'exit1']


def test_crio_image_ids_have_no_digest_prefix_and_its_pause_image_is_pinned_and_reported():
    images = {i.id: i for i in (_listings.Image(x) for x in fixture_json(VCRIO, 'images.json')['images'])}
    assert set(images) == {CRIO_IDS[k] for k in ('pause', 'busybox1_old', 'busybox1', 'busybox2', 'unused3')}
    assert [i.id for i in images.values() if i.pinned] == [CRIO_IDS['pause']]
    assert fixture_json(VCRIO, 'info.json')['config']['sandboxImage'] == 'docker.io/feas/pause:1'


# -- discovery ---------------------------------------------------------------------------------

def test_discovery_finds_crio_on_its_default_socket_with_nothing_configured():
    for sock in ('/var/run/crio/crio.sock', '/run/crio/crio.sock'):
        runtime = crio_node(sockets=(sock,)).resolve(timeout=120)
        assert runtime.runtime_endpoint == runtime.image_endpoint == 'unix://' + sock
        assert runtime.sources['runtime_endpoint'] == 'well-known socket'
        assert runtime.ctr is None and 'ctr' in runtime.errors     # not needed: kept for a run that uses it


def test_containerd_s_socket_comes_first_where_both_are_there():
    runtime = crio_node(sockets=(CRIO_SOCKET, '/run/containerd/containerd.sock')).resolve(timeout=120)
    assert runtime.runtime_endpoint == 'unix:///run/containerd/containerd.sock'


def test_discovery_looks_up_the_well_known_sockets_under_its_root():
    seen = []
    discovery = Discovery(env={'PATH': '/nowhere'}, is_executable=lambda p: p == '/nowhere/crictl',
                          is_socket=lambda p: seen.append(p) or p == '/lab/node/var/run/crio/crio.sock',
                          exists=lambda p: False, is_dir=lambda p: False, root='/lab/node')
    runtime = discovery.resolve(timeout=120)
    assert runtime.runtime_endpoint == 'unix:///lab/node/var/run/crio/crio.sock'
    assert seen[0] == '/lab/node/run/containerd/containerd.sock'


def test_no_socket_error_names_crio():
    try:
        crio_node(sockets=()).resolve(timeout=120)
    except Exception as exc:  # noqa: BLE001
        assert 'unix:///var/run/crio/crio.sock (well-known socket)' in str(exc)
        assert 'Start containerd (or CRI-O)' in str(exc)
    else:
        raise AssertionError('no error')


# -- the engine on CRI-O -----------------------------------------------------------------------

def test_a_default_run_on_crio_removes_phases_1_to_3_and_skips_phase_4_without_ctr(tmp_path):
    runner, engine = crio_engine({'image_min_age': '0s'}, tmp=tmp_path)
    run = engine.run()
    phases = by_phase(run)
    assert run['runtime']['name'] == 'cri-o'
    assert run['status'] == 'ok' and run['failed_phases'] == []
    assert sorted(ids(phases['containers']['removed'])) == sorted([CRIO_IDS['exit0'], CRIO_IDS['exit1']])
    assert ids(phases['sandboxes']['removed']) == [CRIO_IDS['feas-a']]
    removed = {i['id']: i['reason'] for i in phases['images']['removed']}
    assert removed == {CRIO_IDS['busybox1_old']: 'used only by containers removed in this run',
                       CRIO_IDS['busybox1']: 'unused', CRIO_IDS['unused3']: 'unused'}
    kept = {i['id']: i['reason'] for i in phases['images']['kept']}
    assert kept[CRIO_IDS['pause']] == 'pinned by the runtime'
    assert kept[CRIO_IDS['busybox2']].startswith('in use by container sleeper')
    content = phases['content']
    assert content['status'] == 'skipped' and content['skip_reason'] == NOT_APPLICABLE
    assert not [argv for argv in run['commands'] if argv[0].endswith('ctr')]


def test_phase_4_on_crio_is_skipped_even_where_a_ctr_is_installed(tmp_path):
    runner, engine = crio_engine({'image_min_age': '0s'}, discovery=crio_node(ctr=True), tmp=tmp_path)
    run = engine.run(check_mode=True)
    assert by_phase(run)['content']['skip_reason'] == NOT_APPLICABLE
    assert not runner.ran('ctr')


def test_image_min_age_on_crio_dates_images_by_the_record_without_ctr(tmp_path):
    """The default image_min_age (10m): CRI-O has no content store, so an image's age is how long
    this collection has known it. First run: every image is new to it and stays; a record that has
    known them for an hour lets the unused ones go."""
    runner, engine = crio_engine({'image_min_age': '10m'}, phases=('images',), tmp=tmp_path)
    phase = by_phase(engine.run(check_mode=True))['images']
    assert phase['status'] == 'ok', phase.get('error')
    kept = {i['id']: i['reason'] for i in phase['kept']}
    assert kept[CRIO_IDS['unused3']] == 'younger than image_min_age 10m (first seen 0s ago, per the last-use record)'
    assert phase['removed'] == []
    assert not runner.ran('ctr')
    now = CRIO_NOW_NS // 10 ** 9
    record = {'version': 1, 'updated': now - 3600,
              'images': {i: {'first_seen': now - 3600, 'last_used': None, 'refs': []} for i in CRIO_IDS.values()}}
    (tmp_path / 'images.json').write_text(json.dumps(record))
    runner, engine = crio_engine({'image_min_age': '10m'}, phases=('images',), tmp=tmp_path)
    phase = by_phase(engine.run(check_mode=True))['images']
    assert {i['id'] for i in phase['removed']} == {CRIO_IDS['busybox1'], CRIO_IDS['unused3']}, phase['kept']


def test_the_runner_report_names_the_runtime(tmp_path):
    runner, engine = crio_engine({'image_min_age': '0s'}, tmp=tmp_path)
    assert engine.run(check_mode=True)['runtime']['name'] == 'cri-o'
    assert engine.runtime_name() == 'cri-o'
    assert len(runner.ran('crictl', 'version')) == 1      # asked once per engine


def test_the_unusable_image_check_is_not_applicable_on_crio(tmp_path):
    """Phase 3's look for images the runtime cannot unpack again reads containerd's snapshotter
    with ctr: on CRI-O it is not applicable, and no ctr runs."""
    runner, engine = crio_engine({'image_min_age': '0s'}, phases=('images',), tmp=tmp_path)
    phase = by_phase(engine.run(check_mode=True))['images']
    assert phase['unusable'] == {'checked': False, 'why': 'not applicable: CRI-O has no containerd snapshotter '
                                                          '(images live in containers/storage; ctr is not used)'}
    assert not runner.ran('ctr')

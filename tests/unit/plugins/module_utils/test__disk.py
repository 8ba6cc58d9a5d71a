# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The image filesystem's figure from the filesystem itself, and the wait for it to settle."""

from ansible_collections.nodemaint.image_gc.plugins.module_utils import _disk


class Clock:
    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def reader(*used):
    values = iter(used)

    def read(path):
        value = next(values)
        return None if value is None else {'path': path, 'used_bytes': value}
    return read


def test_settles_when_two_readings_agree():
    clock = Clock()
    got = _disk.settled_figure('/x', timeout=5, interval=0.25, read=reader(900, 700, 650, 650),
                               sleep=clock.sleep, monotonic=clock.monotonic)
    assert got == {'path': '/x', 'used_bytes': 650, 'settled': True, 'waited': 0.75}


def test_re_reads_soon_and_backs_off_while_the_readings_differ():
    clock = Clock()
    got = _disk.settled_figure('/x', timeout=5, read=reader(900, 700, 650, 640, 640), sleep=clock.sleep,
                               monotonic=clock.monotonic)
    # 0.05 s, then 0.1, 0.2 while they differ, then at most 0.25
    assert got == {'path': '/x', 'used_bytes': 640, 'settled': True, 'waited': 0.6}
    clock = Clock()
    quiet = _disk.settled_figure('/x', timeout=5, read=reader(500, 500), sleep=clock.sleep, monotonic=clock.monotonic)
    assert quiet['settled'] is True and quiet['waited'] == 0.05


def test_gives_up_after_the_timeout_and_says_so():
    clock = Clock()
    got = _disk.settled_figure('/x', timeout=1, interval=0.25, read=reader(*range(1000, 0, -1)),
                               sleep=clock.sleep, monotonic=clock.monotonic)
    assert got['settled'] is False and got['waited'] == 1.0 and got['used_bytes'] == 996


def test_an_unreadable_filesystem_is_none():
    clock = Clock()
    assert _disk.settled_figure('/x', read=reader(None), sleep=clock.sleep, monotonic=clock.monotonic) is None
    assert _disk.settled_figure('/x', read=reader(5, None), sleep=clock.sleep, monotonic=clock.monotonic) is None


def test_figure_of_a_real_directory(tmp_path):
    fig = _disk.filesystem_figure(str(tmp_path / 'not' / 'there'))
    assert fig['size_bytes'] >= fig['used_bytes'] >= 0 and 0.0 <= fig['used_percent'] <= 100.0
    assert fig['source'] == 'statvfs of %s' % tmp_path
    assert str(tmp_path).startswith(fig['path'])            # the mount point holding it
    assert _disk.filesystem_figure('/x', usage={}) is None


def test_mount_point_stops_at_the_device_boundary():
    assert _disk.mount_point('/proc/self') == '/proc'
    assert _disk.mount_point('/') == '/'


def test_read_figure_takes_the_settled_figure_of_the_fullest_only(tmp_path, monkeypatch):
    """The report after reads the settled figure while crictl imagefsinfo answers (_disk_view):
    read_figure uses it when its path is the fullest filesystem's, and settles that one otherwise.
    The filesystem is read through a quiet stand-in of statvfs's figure: the machine's own /tmp moves
    while other work writes to it, and whether it settles is settled_figure's test, not this one's."""
    fs = dict(_disk.filesystem_usage(str(tmp_path)), mountpoint=str(tmp_path), used_bytes=0)
    quiet = _disk.filesystem_figure(fs['fs_path'])
    monkeypatch.setattr(_disk, 'filesystem_figure', lambda path, usage=None: dict(quiet))
    settled = {'used_bytes': 1, 'source': 'read beside imagefsinfo'}
    path, figure, unknown = _disk.read_figure([fs], settle=True, settled=(fs['fs_path'], settled))
    assert (path, figure, unknown) == (fs['fs_path'], settled, None)
    path, figure, unknown = _disk.read_figure([fs], settle=True, settled=('/elsewhere', settled))
    assert figure is not settled and figure['settled'] is True and figure['source'].startswith('statvfs of ')

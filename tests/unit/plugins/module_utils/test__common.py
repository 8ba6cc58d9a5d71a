# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""_units (durations, sizes, ages), _common (CommandRunner), _files (RunLock)."""

import os
import sys
import tempfile

import pytest

from ansible_collections.nodemaint.image_gc.plugins.module_utils import _common
from ansible_collections.nodemaint.image_gc.plugins.module_utils._common import CommandRunner, ImageGCError
from ansible_collections.nodemaint.image_gc.plugins.module_utils._files import RunLock
from ansible_collections.nodemaint.image_gc.plugins.module_utils._units import format_duration, parse_duration, parse_human_age, parse_human_size

from tests.unit.image_gc_testlib import lock_held_elsewhere


# -- durations -------------------------------------------------------------------------------

@pytest.mark.parametrize('value, seconds', [
    ('600', 600),
    ('90s', 90),
    ('10m', 600),
    ('1h30m', 5400),
    ('1h', 3600),
    ('2h0m5s', 7205),
    ('0s', 0),
    ('7d', 7 * 86400),
    ('1d12h', 129600),
    (' 10m ', 600),
    (600, 600),
    (0, 0),
])
def test_parse_duration_accepts(value, seconds):
    assert parse_duration(value, 'min_age') == seconds


@pytest.mark.parametrize('value', ['10x', '-1', '', '1.5h', True, False, -1, None, 1.5, [], '10 m', 'm', 'h',
                                   '1m1h', '10mm', '1h1d', '-7d', '7 d'])
def test_parse_duration_rejects_naming_the_option(value):
    with pytest.raises(ImageGCError) as exc:
        parse_duration(value, 'created_min_age')
    message = str(exc.value)
    assert message.startswith('created_min_age: invalid duration')
    assert repr(value) in message
    assert '1h30m' in message  # says how to write it


@pytest.mark.parametrize('seconds, text', [(0, '0s'), (59, '59s'), (600, '10m'), (5400, '1h30m'), (3661, '1h1m1s'),
                                           (7200, '2h'), (86400, '24h'), (129600, '36h'), (172800, '2d'),
                                           (7 * 86400 + 3600, '7d1h')])
def test_format_duration_roundtrip(seconds, text):
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


# -- ctr sizes and ages ----------------------------------------------------------------------

@pytest.mark.parametrize('text, size', [
    ('422B', 422),            # ctr content ls (both recordings)
    ('1.028MB', 1028000),     # ctr content ls
    ('345B', 345),
    ('1004.7 KiB', 1028813),  # ctr images ls
    ('1004.8 KiB', 1028915),
    ('2GB', 2 * 1000 ** 3),
    ('1.5 GiB', 1610612736),
])
def test_parse_human_size(text, size):
    assert parse_human_size(text) == size


@pytest.mark.parametrize('text', ['', None, '12', 'MB', '1.0XB', '-1B', 'many'])
def test_parse_human_size_rejects(text):
    with pytest.raises(ValueError):
        parse_human_size(text)


@pytest.mark.parametrize('text, age', [
    ('7 seconds', 7),         # ctr content ls (both recordings)
    ('13 seconds', 13),
    ('Less than a second', 0),
    ('1 second', 1),
    ('About a minute', 60),
    ('5 minutes', 300),
    ('About an hour', 3600),
    ('2 hours', 5400),        # rounded: printed from 1h30m on
    ('3 hours', 2 * 3600 + 1800),
    ('2 days', 47 * 3600 + 1800),   # printed once the hours round to 48
    ('3 days', 2 * 86400 + 43200),
    ('2 weeks', 14 * 86400),
    ('3 weeks', 17 * 86400 + 43200),
    ('2 months', 60 * 86400),
    ('4 months', 105 * 86400),
    ('2 years', 730 * 86400),
    ('3 years', 912 * 86400 + 43200),
    ('3 hours ago', 2 * 3600 + 1800),
])
def test_parse_human_age(text, age):
    assert parse_human_age(text) == age


def _go_units_human_duration(seconds):
    """go-units' HumanDuration (duration.go, v0.5.0), transcribed, for whole seconds."""
    hour, day = 3600, 86400
    week, month, year = 7 * day, 30 * day, 365 * day

    def rounded(unit):
        return int(seconds / unit + 0.5)
    if seconds < 1:
        return 'Less than a second'
    if seconds == 1:
        return '1 second'
    if seconds < 60:
        return '%d seconds' % seconds
    if seconds // 60 == 1:
        return 'About a minute'
    if seconds // 60 < 60:
        return '%d minutes' % (seconds // 60)
    if rounded(hour) == 1:
        return 'About an hour'
    if rounded(hour) < 48:
        return '%d hours' % rounded(hour)
    if seconds < 2 * week:
        return '%d days' % rounded(day)
    if seconds < 2 * month:
        return '%d weeks' % rounded(week)
    if seconds < 2 * year:
        return '%d months' % rounded(month)
    return '%d years' % rounded(year)


def test_parse_human_age_is_the_least_age_each_form_can_stand_for():
    """Every duration up to 4 years (in steps fine enough to hit each boundary) parses to at most
    itself, and the least duration printed as each form parses to exactly that duration."""
    least = {}
    steps = list(range(0, 7200)) + list(range(7200, 10 * 86400, 60)) + list(range(10 * 86400, 4 * 365 * 86400, 1800))
    for seconds in steps:
        text = _go_units_human_duration(seconds)
        assert parse_human_age(text) <= seconds, (text, seconds)
        least.setdefault(text, seconds)
    for text, seconds in least.items():
        assert parse_human_age(text) == seconds, text


@pytest.mark.parametrize('text', ['', 'soon', '5 fortnights', '1.5 hours', 'ago'])
def test_parse_human_age_rejects(text):
    with pytest.raises(ValueError):
        parse_human_age(text)


# -- CommandRunner ---------------------------------------------------------------------------

def test_command_runner_runs_argv_with_c_locale_and_records_history():
    runner = CommandRunner(env={'PATH': os.environ.get('PATH', ''), 'LANG': 'de_DE.UTF-8'})
    script = 'import os,sys; print(os.environ["LC_ALL"], os.environ["LANG"]); sys.stderr.write("w\\n"); sys.exit(3)'
    result = runner.run([sys.executable, '-c', script])
    assert result.rc == 3
    assert result.stdout == 'C C\n'
    assert result.stderr == 'w\n'
    assert runner.history == [result]
    assert result.argv == [sys.executable, '-c', script]


def test_command_runner_never_uses_a_shell():
    runner = CommandRunner()
    result = runner.run(['echo', '$HOME; true'])
    assert result.stdout == '$HOME; true\n'
    with pytest.raises(TypeError):
        runner.run('echo hi')
    with pytest.raises(TypeError):
        runner.run([])


def test_command_runner_missing_binary_is_rc_127():
    runner = CommandRunner()
    result = runner.run(['/nonexistent/crictl', 'ps'])
    assert result.rc == 127
    assert '/nonexistent/crictl' in result.stderr
    assert runner.history == [result]


def test_command_runner_timeout_is_rc_124():
    runner = CommandRunner()
    result = runner.run([sys.executable, '-c', 'import time; time.sleep(5)'], timeout=0.3)
    assert result.rc == 124
    assert 'timed out' in result.stderr


def test_command_runner_gets_no_stdin():
    result = CommandRunner().run([sys.executable, '-c', 'import sys; print(repr(sys.stdin.read()))'])
    assert result.stdout == "''\n"


def test_command_runner_reads_stdout_only_once_the_command_exited():
    """Issue 26: a command's stdout goes to a (deleted) file, read after the command exited, so a
    big listing's text is not held by the run while the crictl printing it is still resident.
    Fails with a pipe. The output and stderr are as before."""
    script = 'import os,stat,sys; print(stat.S_ISREG(os.fstat(1).st_mode)); sys.stderr.write("w\\n")'
    result = CommandRunner().run([sys.executable, '-c', script])
    assert (result.rc, result.stdout, result.stderr) == (0, 'True\n', 'w\n')
    big = CommandRunner().run([sys.executable, '-c', 'import sys; sys.stdout.write("x" * 3000000)'])
    assert big.stdout == 'x' * 3000000


def test_command_runner_without_a_temporary_directory_reads_through_a_pipe(monkeypatch):
    def no_tmp(*args, **kwargs):
        raise FileNotFoundError('no usable temporary directory')
    monkeypatch.setattr(tempfile, 'TemporaryFile', no_tmp)
    script = 'import os,stat,sys; print(stat.S_ISFIFO(os.fstat(1).st_mode)); sys.exit(2)'
    result = CommandRunner().run([sys.executable, '-c', script])
    assert (result.rc, result.stdout) == (2, 'True\n')


# -- RunLock ---------------------------------------------------------------------------------

def test_run_lock_acquire_release_and_holder(tmp_path):
    path = str(tmp_path / 'sub' / 'gc.lock')
    lock = RunLock(path, wait=0)
    assert lock.acquire()
    assert lock.holder() == os.getpid()
    other = RunLock(path, wait=0.3, poll=0.05)
    assert not other.acquire()     # flock conflicts between open file descriptions
    lock.release()
    assert other.acquire()
    other.release()


def test_run_lock_context_manager_error_names_holder_and_lock_wait(tmp_path):
    path = str(tmp_path / 'gc.lock')
    with lock_held_elsewhere(path) as holder:
        with pytest.raises(ImageGCError) as exc:
            with RunLock(path, wait=0.3, poll=0.05):
                pass
        assert path in str(exc.value)
        assert str(holder) in str(exc.value)
        assert 'lock_wait' in str(exc.value)
    with RunLock(path, wait=1):
        pass


def test_command_error_to_dict():
    result = _common.CommandResult(['crictl', 'ps'], 1, 'out', 'err')
    error = _common.CommandError('crictl ps failed', result)
    assert error.to_dict() == {'msg': 'crictl ps failed', 'cmd': ['crictl', 'ps'], 'rc': 1, 'stdout': 'out',
                               'stderr': 'err'}

# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""extras/: the Prometheus alerting rules (promtool check rules, promtool test rules) and the
Grafana dashboard, checked against the metric names the runner really writes."""

import fnmatch
import glob
import json
import os
import re

import pytest
import yaml

from tests.unit.image_gc_testlib import metric_names, runner_textfile
from tests.unit.promtool_lib import promtool

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RULES = os.path.join(ROOT, 'extras', 'prometheus', 'node-image-gc.rules.yml')
RULE_TESTS = sorted(glob.glob(os.path.join(ROOT, 'extras', 'prometheus', 'tests', '*.yml')))
DASHBOARD = os.path.join(ROOT, 'extras', 'grafana', 'node-image-gc.json')
RUNBOOK = os.path.join(ROOT, 'docs', 'runbook.md')
# Metrics the rules may use that node_exporter itself provides.
EXPORTER_METRICS = {'up'}
KEYWORDS = {'and', 'or', 'unless', 'bool', 'offset', 'inf', 'nan', 'group_left', 'group_right'}


@pytest.fixture
def written(tmp_path, peer_root):
    """The metric names the runner writes, from its real output after two runs."""
    return metric_names(runner_textfile(tmp_path, peer_root, runs=2))


def promql_metric_names(expr):
    """Metric names an expression selects: identifiers that are not functions, keywords, label
    names (in matchers and in by/without/on/ignoring/group_* lists), durations or $variables."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r'\{[^}]*\}', ' ', text)
    text = re.sub(r'\[[^\]]*\]', ' ', text)
    text = re.sub(r'\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)', ' ', text)
    text = re.sub(r'\$\{?\w+\}?', ' ', text)
    text = re.sub(r'\b\d+(?:\.\d+)?(?:e[+-]?\d+)?\b', ' ', text)
    names = set()
    for match in re.finditer(r'([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\()?', text):
        if not match.group(2) and match.group(1) not in KEYWORDS:
            names.add(match.group(1))
    return names


@pytest.mark.parametrize('expr, names', [
    ('up{job="node"} == 1 unless on (instance) node_image_gc_info', {'up', 'node_image_gc_info'}),
    ('count without (phase) (node_image_gc_phase_success == 0) > 0', {'node_image_gc_phase_success'}),
    ('time() - node_image_gc_last_success_timestamp_seconds > 13 * 3600',
     {'node_image_gc_last_success_timestamp_seconds'}),
    ('sum by (phase) (increase(x_total{job=~"$job", instance=~"a{b}"}[$__range])) / on() group_left y',
     {'x_total', 'y'}),
])
def test_promql_metric_names(expr, names):
    assert promql_metric_names(expr) == names


def load_yaml(path):
    with open(path) as handle:
        return yaml.safe_load(handle)


def alerts():
    return [rule for group in load_yaml(RULES)['groups'] for rule in group['rules'] if 'alert' in rule]


# -- alerting rules --------------------------------------------------------------------------------

def test_promtool_check_rules():
    proc = promtool('check', 'rules', RULES)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'SUCCESS: %d rules found' % len(alerts()) in proc.stdout


def test_promtool_test_rules():
    assert RULE_TESTS, 'no rule unit tests in extras/prometheus/tests/'
    proc = promtool('test', 'rules', *RULE_TESTS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'FAILED' not in proc.stdout and proc.stdout.count('SUCCESS') == len(RULE_TESTS), proc.stdout


def test_every_alert_has_a_test_that_sees_it_fire_and_one_that_does_not():
    firing, quiet = set(), set()
    for path in RULE_TESTS:
        for group in load_yaml(path)['tests']:
            for case in group.get('alert_rule_test', []):
                (firing if case.get('exp_alerts') else quiet).add(case['alertname'])
    names = set(rule['alert'] for rule in alerts())
    assert names == {'NodeImageGCFailing', 'NodeImageGCNoRecentSuccess', 'NodeImageGCImageFilesystemStillFull',
                     'NodeImageGCMetricsMissing', 'NodeImageGCRepulls'}
    assert firing == names, 'alerts without a firing test case: %s' % sorted(names - firing)
    assert quiet == names, 'alerts without a case where they stay quiet: %s' % sorted(names - quiet)


def github_anchors(markdown_path):
    with open(markdown_path) as handle:
        headings = [line.lstrip('#').strip() for line in handle if re.match(r'#{1,6} ', line)]
    return set(re.sub(r'[^\w\- ]', '', h.lower()).replace(' ', '-') for h in headings)


@pytest.mark.parametrize('rule', alerts(), ids=lambda rule: rule['alert'])
def test_alert_annotations_and_runbook_link(rule):
    annotations = rule['annotations']
    assert set(annotations) >= {'summary', 'description', 'runbook_url'}
    assert '{{ $labels.instance }}' in annotations['description']
    if rule['alert'] != 'NodeImageGCMetricsMissing':     # its value is up's 1: the absence is the news
        assert '$value' in annotations['description']
    assert rule['labels']['severity'] in ('warning', 'critical')
    base = 'https://github.com/nodemaint/image_gc/blob/main/docs/runbook.md#'
    assert annotations['runbook_url'].startswith(base)
    anchor = annotations['runbook_url'][len(base):]
    assert anchor == rule['alert'].lower()
    assert anchor in github_anchors(RUNBOOK), 'docs/runbook.md has no heading for #%s' % anchor


@pytest.mark.parametrize('rule', alerts(), ids=lambda rule: rule['alert'])
def test_alert_expressions_name_only_metrics_the_runner_writes(rule, written):
    names = promql_metric_names(rule['expr'])
    assert names & written, 'the expression uses none of the runner\'s metrics'
    assert names <= written | EXPORTER_METRICS, sorted(names - written - EXPORTER_METRICS)


# -- dashboard ------------------------------------------------------------------------------------

def dashboard():
    with open(DASHBOARD) as handle:
        return json.load(handle)


def panels():
    return dashboard()['panels']


def test_dashboard_has_a_title_and_a_short_lowercase_uid():
    dash = dashboard()
    assert dash['title']
    assert re.match(r'^[a-z0-9-]{1,40}$', dash['uid'])


def test_dashboard_schema_version_is_36_or_later():
    schema = dashboard()['schemaVersion']
    assert isinstance(schema, int) and schema >= 36


def test_dashboard_time_range_is_relative_to_now():
    assert dashboard()['time']['from'].startswith('now-')


def test_dashboard_datasource_variable_lists_the_prometheus_datasources():
    variables = dict((v['name'], v) for v in dashboard()['templating']['list'])
    assert variables['datasource']['type'] == 'datasource'
    assert variables['datasource']['query'] == 'prometheus'


def test_dashboard_has_at_least_four_panels():
    assert len(panels()) >= 4


def test_dashboard_panel_ids_are_unique():
    assert len(set(p['id'] for p in panels())) == len(panels())


by_panel = pytest.mark.parametrize('panel', panels(), ids=lambda panel: panel.get('title') or str(panel.get('id')))


@by_panel
def test_panel_is_of_a_grafana_panel_type(panel):
    assert panel['type'] in ('timeseries', 'stat', 'table', 'gauge', 'bargauge'), panel['title']


@by_panel
def test_panel_has_a_title(panel):
    assert panel['title']


@by_panel
def test_panel_fits_the_24_column_grid(panel):
    grid = panel['gridPos']
    assert all(isinstance(grid[k], int) for k in 'hwxy') and grid['x'] + grid['w'] <= 24, panel['title']


@by_panel
def test_panel_queries_the_chosen_datasource(panel):
    assert panel['datasource'] == {'type': 'prometheus', 'uid': '${datasource}'}, panel['title']


@by_panel
def test_panel_has_targets_with_unique_ref_ids(panel):
    assert panel['targets'], panel['title']
    assert len(set(t['refId'] for t in panel['targets'])) == len(panel['targets']), panel['title']


@by_panel
def test_every_target_of_a_panel_has_an_expression_on_the_panels_datasource(panel):
    for target in panel['targets']:
        assert target['expr'].strip() and target['datasource'] == panel['datasource'], panel['title']


def test_dashboard_queries_name_only_metrics_the_runner_writes(written):
    dash = dashboard()
    for panel in dash['panels']:
        for target in panel['targets']:
            names = promql_metric_names(target['expr'])
            assert names, '%s: %s selects no metric' % (panel['title'], target['expr'])
            assert names <= written, '%s: %s' % (panel['title'], sorted(names - written))
    for variable in dash['templating']['list']:
        if variable['type'] != 'query':
            continue
        match = re.match(r'^label_values\((.+),\s*(\w+)\)$', variable['query']['query'])
        assert match, variable['name']
        assert promql_metric_names(match.group(1)) <= written and promql_metric_names(match.group(1)), \
            variable['name']


def test_dashboard_has_the_views_the_runbook_promises():
    exprs = [t['expr'] for p in dashboard()['panels'] for t in p['targets']]

    def some(pattern):
        return [e for e in exprs if re.search(pattern, e)]
    assert some(r'^sum by \(phase\) \(increase\(node_image_gc_reclaimed_bytes_total\b'), 'fleet bytes reclaimed'
    assert some(r'^node_image_gc_image_fs_used_bytes\{'), 'per-node image filesystem before and after'
    assert some(r'increase\(node_image_gc_phase_failures_total\b'), 'failures by phase'
    assert some(r'^time\(\) - node_image_gc_last_success_timestamp_seconds\b'), 'last success age'


# -- packaging --------------------------------------------------------------------------------------

def test_galaxy_build_keeps_extras():
    ignore = load_yaml(os.path.join(ROOT, 'galaxy.yml')).get('build_ignore', [])
    files = [os.path.relpath(p, ROOT) for p in (RULES, DASHBOARD) + tuple(RULE_TESTS)]
    for path in files:
        parts = path.split(os.sep)
        prefixes = [os.sep.join(parts[:i]) for i in range(1, len(parts) + 1)]
        dropped = [(p, pat) for p in prefixes for pat in ignore if fnmatch.fnmatch(p, pat)]
        assert not dropped, '%s is dropped by build_ignore %s' % (path, dropped)

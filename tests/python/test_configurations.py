"""Automatic device configurations with the real azure-iot-hub 2.7.0 SDK, unmodified:
IoTHubConfigurationManager's create, get, list, update, delete and test queries, and the
configuration applied to the twins it targets, continuously (a device created or re-tagged
later gets it; a twin that stops matching gets the next one). Run by
tests/tests/configurations.rs with TWINHUB_CONNECTION_STRING and REQUESTS_CA_BUNDLE.
"""

import os
import uuid

import pytest
from azure.iot.hub import IoTHubConfigurationManager, IoTHubRegistryManager
from azure.iot.hub.models import (
    Configuration,
    ConfigurationContent,
    ConfigurationMetrics,
    ConfigurationQueriesTestInput,
    QuerySpecification,
    Twin,
)
from msrest.exceptions import HttpOperationError
from waiting import eventually

OWNER = os.environ["TWINHUB_CONNECTION_STRING"]


def refused(call):
    """The status and IoT Hub error code of a call that must fail."""
    with pytest.raises(HttpOperationError) as err:
        call()
    response = err.value.response
    return response.status_code, response.headers.get("iothub-errorcode")


def configuration(config_id, content, condition, priority, metrics=None):
    return Configuration(
        id=config_id,
        schema_version="1.0",
        labels={"team": "ops"},
        content=ConfigurationContent(device_content=content),
        target_condition=condition,
        priority=priority,
        metrics=ConfigurationMetrics(queries=metrics or {}),
    )


def test_configurations_apply_to_the_twins_they_target():
    registry = IoTHubRegistryManager.from_connection_string(OWNER)
    manager = IoTHubConfigurationManager.from_connection_string(OWNER)
    run = uuid.uuid4().hex[:6]
    devices = [f"cfg-{run}-{i}" for i in range(4)]
    for i, device_id in enumerate(devices):
        registry.create_device_with_sas(device_id, None, None, "enabled")
        building = "Building-A" if i < 3 else "Building-B"
        registry.update_twin(device_id, Twin(tags={"run": run, "building": building, "env": "production"}), "*")

    base = f"tags.run = '{run}' AND tags.env = 'production'"
    broad = manager.create_configuration(
        configuration(f"broad-{run}", {"properties.desired.telemetryInterval": 60}, base, 1,
                      {"reporting": f"SELECT deviceId FROM devices WHERE {base} AND properties.reported.telemetryInterval = 60"})
    )
    assert broad.id == f"broad-{run}" and broad.etag
    narrow_condition = f"{base} AND tags.building = 'Building-A'"
    narrow = manager.create_configuration(
        configuration(f"narrow-{run}", {"properties.desired.telemetryInterval": 15, "properties.desired.mode.name": "eco"},
                      narrow_condition, 10)
    )
    assert refused(lambda: manager.create_configuration(configuration(f"narrow-{run}", {"properties.desired.x": 1}, base, 1))) == (409, "ConfigurationAlreadyExists")

    def interval(device_id):
        return registry.get_twin(device_id).properties.desired.get("telemetryInterval")

    # The higher priority wins where both target; the other gets the broad one.
    eventually(lambda: [interval(d) for d in devices] == [15, 15, 15, 60], "both configurations applied")
    assert registry.get_twin(devices[0]).properties.desired["mode"] == {"name": "eco"}
    got = manager.get_configuration(f"narrow-{run}")
    assert got.system_metrics.results == {"targetedCount": 3, "appliedCount": 3}, got.system_metrics.results
    assert got.target_condition == narrow_condition and got.priority == 10
    got_broad = manager.get_configuration(f"broad-{run}")
    assert got_broad.system_metrics.results == {"targetedCount": 4, "appliedCount": 1}
    assert got_broad.metrics.results == {"reporting": 0}
    query = QuerySpecification(query=f"SELECT * FROM devices WHERE configurations.[[narrow-{run}]].status = 'Applied'")
    assert sorted(t.device_id for t in registry.query_iot_hub(query).items) == devices[:3]
    listed = [c.id for c in manager.get_configurations()]
    assert f"broad-{run}" in listed and f"narrow-{run}" in listed

    # A device created and tagged later gets its configuration with the tag write.
    late = f"cfg-{run}-late"
    registry.create_device_with_sas(late, None, None, "enabled")
    registry.update_twin(late, Twin(tags={"run": run, "building": "Building-A", "env": "production"}), "*")
    eventually(lambda: interval(late) == 15, "the late device configured", 2)
    # Re-tagged out of the narrow target: the broad one takes over.
    registry.update_twin(late, Twin(tags={"building": "Building-C"}), "*")
    eventually(lambda: interval(late) == 60, "the re-tagged device reconfigured", 2)

    # An update (labels and priority, with the etag): the broad one now outranks the narrow.
    got_broad.priority = 20
    updated = manager.update_configuration(got_broad, got_broad.etag)
    assert updated.priority == 20 and updated.etag != got_broad.etag
    eventually(lambda: [interval(d) for d in devices] == [60, 60, 60, 60], "the new priority applied")
    assert refused(lambda: manager.update_configuration(got_broad, got_broad.etag)) == (412, "PreconditionFailed")

    # Deleted: its twins go back to the next configuration; values stay where none applies.
    manager.delete_configuration(f"broad-{run}")
    eventually(lambda: [interval(d) for d in devices] == [15, 15, 15, 60], "the narrow one back")
    manager.delete_configuration(f"narrow-{run}")
    assert refused(lambda: manager.get_configuration(f"narrow-{run}")) == (404, "ConfigurationNotFound")
    eventually(lambda: "configurations" not in str(registry.get_twin(devices[0]).as_dict()), "statuses cleared", 10)
    assert interval(devices[0]) == 15

    for device_id in devices + [late]:
        registry.delete_device(device_id)


def test_a_module_configuration_applies_to_the_module_twins_it_targets():
    registry = IoTHubRegistryManager.from_connection_string(OWNER)
    manager = IoTHubConfigurationManager.from_connection_string(OWNER)
    run = uuid.uuid4().hex[:6]
    device, agent = f"mcfg-{run}", f"agent-{run}"
    registry.create_device_with_sas(device, None, None, "enabled")
    for module in (agent, "camera"):
        registry.create_module_with_sas(device, module, None, None, None)
    # Azure's form: moduleContent, and a condition that starts FROM devices.modules WHERE.
    condition = f"FROM devices.modules WHERE moduleId = '{agent}'"
    made = manager.create_configuration(
        Configuration(
            id=f"agents-{run}",
            content=ConfigurationContent(module_content={"properties.desired.sampleRate": 5}),
            target_condition=condition,
            priority=1,
            metrics=ConfigurationMetrics(queries={}),
        )
    )
    assert made.content.module_content == {"properties.desired.sampleRate": 5}

    def rate(device_id, module):
        return registry.get_module_twin(device_id, module).properties.desired.get("sampleRate")

    eventually(lambda: rate(device, agent) == 5, "the module configuration applied")
    assert rate(device, "camera") is None
    assert "sampleRate" not in registry.get_twin(device).properties.desired
    # A module created later gets it with its creation.
    late = f"mcfg-{run}-late"
    registry.create_device_with_sas(late, None, None, "enabled")
    registry.create_module_with_sas(late, agent, None, None, None)
    eventually(lambda: rate(late, agent) == 5, "the late module configured", 2)
    got = manager.get_configuration(f"agents-{run}")
    assert got.system_metrics.results == {"targetedCount": 2, "appliedCount": 2}, got.system_metrics.results
    query = QuerySpecification(query=f"SELECT * FROM devices.modules WHERE configurations.[[agents-{run}]].status = 'Applied'")
    applied = sorted((t.device_id, t.module_id) for t in registry.query_iot_hub(query).items)
    assert applied == [(device, agent), (late, agent)], applied

    # A device configuration targeting '*' leaves module twins alone, and the reverse.
    wrong = Configuration(id=f"wrong-{run}", content=ConfigurationContent(module_content={"properties.desired.x": 1}),
                          target_condition="tags.a = 1", priority=1)
    assert refused(lambda: manager.create_configuration(wrong)) == (400, "ArgumentInvalid")
    manager.delete_configuration(f"agents-{run}")
    registry.delete_device(device)
    registry.delete_device(late)


def test_bad_configurations_are_refused_and_test_queries_positions_errors():
    manager = IoTHubConfigurationManager.from_connection_string(OWNER)
    good = {"properties.desired.x": 1}
    assert refused(lambda: manager.create_configuration(configuration("bad-1", good, "tags.a = ", 1))) == (400, "ArgumentInvalid")
    assert refused(lambda: manager.create_configuration(configuration("bad-2", {"tags.a": 1}, "*", 1))) == (400, "ArgumentInvalid")
    assert refused(lambda: manager.create_configuration(configuration("bad-3", good, "*", -5))) == (400, "ArgumentInvalid")
    assert refused(lambda: manager.create_configuration(configuration("Bad-Upper", good, "*", 1))) == (400, "ArgumentInvalid")
    big = {f"properties.desired.p{i}": "x" * 4000 for i in range(10)}
    assert refused(lambda: manager.create_configuration(configuration("bad-4", big, "*", 1))) == (400, "ArgumentInvalid")
    assert "bad-1" not in [c.id for c in manager.get_configurations()]

    result = manager.test_configuration_queries(
        ConfigurationQueriesTestInput(
            target_condition="tags.a = ",
            custom_metric_queries={"ok": "SELECT deviceId FROM devices", "broken": "SELECT deviceId FROM"},
        )
    )
    assert "1:" in result.target_condition_error, result.target_condition_error
    assert list(result.custom_metric_query_errors) == ["broken"]
    clean = manager.test_configuration_queries(ConfigurationQueriesTestInput(target_condition="tags.a = 1"))
    assert clean.target_condition_error == "" and not clean.custom_metric_query_errors

"""The real azure-iot-hub 2.7.0 service SDK against twinhub, unmodified.

Run by tests/tests/python_service_sdk.rs, which starts `wrangler dev` over https and passes
TWINHUB_CONNECTION_STRING (owner policy) and REQUESTS_CA_BUNDLE (the hub's test certificate).
The article's backend calls come first: get the twin, update tags with the twin's etag, update
desired firmwareVersion with the etag, as `UpdateTwinAsync(deviceId, patch, twin.ETag)` does.
"""

import os
import uuid

import pytest
from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import ExportImportDevice, Twin, TwinProperties
from msrest.exceptions import HttpOperationError

CS = os.environ["TWINHUB_CONNECTION_STRING"]


@pytest.fixture()
def registry():
    return IoTHubRegistryManager.from_connection_string(CS)


@pytest.fixture()
def device_id(registry):
    device_id = f"sensor-{uuid.uuid4().hex[:8]}"
    device = registry.create_device_with_sas(device_id, None, None, "enabled")
    assert device.device_id == device_id
    yield device_id
    try:
        registry.delete_device(device_id)
    except HttpOperationError:
        pass


def status_of(excinfo):
    return excinfo.value.response.status_code


def test_create_device_generates_keys(registry, device_id):
    device = registry.get_device(device_id)
    assert device.status == "enabled"
    assert device.authentication.type == "sas"
    assert len(device.authentication.symmetric_key.primary_key) == 44
    assert device.generation_id and device.etag
    with pytest.raises(HttpOperationError) as err:
        registry.create_device_with_sas(device_id, None, None, "enabled")
    assert status_of(err) == 409


def test_article_backend_flow(registry, device_id):
    twin = registry.get_twin(device_id)
    assert twin.etag == "AAAAAAAAAAE="
    assert twin.version == 2
    assert twin.properties.desired["$version"] == 1

    # UpdateTagsAsync: tags patch with the etag just read.
    tags = {"location": {"building": "Building-A", "floor": 3}, "deployment": {"environment": "production"}}
    updated = registry.update_twin(device_id, Twin(tags=tags), twin.etag)
    assert updated.tags == tags
    assert updated.etag == "AAAAAAAAAAI="

    # UpdateDesiredPropertiesAsync: desired patch with the etag from a fresh read.
    twin = registry.get_twin(device_id)
    desired = TwinProperties(desired={"firmwareVersion": "2.1.0", "telemetryInterval": 30})
    updated = registry.update_twin(device_id, Twin(properties=desired), twin.etag)
    assert updated.properties.desired["firmwareVersion"] == "2.1.0"
    assert updated.properties.desired["$version"] == 2
    assert updated.properties.desired["$metadata"]["firmwareVersion"]["$lastUpdatedVersion"] == 2
    assert updated.tags == tags

    # The etag from the first read is stale now: 412, and nothing changed.
    with pytest.raises(HttpOperationError) as err:
        registry.update_twin(device_id, Twin(tags={"location": {"building": "Building-B"}}), "AAAAAAAAAAE=")
    assert status_of(err) == 412
    assert registry.get_twin(device_id).tags["location"]["building"] == "Building-A"


def test_replace_twin(registry, device_id):
    registry.update_twin(device_id, Twin(tags={"old": 1}, properties=TwinProperties(desired={"a": 1, "b": 2})))
    replaced = registry.replace_twin(
        device_id, Twin(tags={"new": True}, properties=TwinProperties(desired={"b": 3}))
    )
    assert replaced.tags == {"new": True}
    assert {k: v for k, v in replaced.properties.desired.items() if not k.startswith("$")} == {"b": 3}


def test_update_device_rotates_keys_and_disables(registry, device_id):
    device = registry.get_device(device_id)
    new_key = "dHdpbmh1Yi1yb3RhdGVkLWtleS0wMTIzNDU2Nzg5YWI="
    updated = registry.update_device_with_sas(device_id, device.etag, new_key, new_key, "disabled")
    assert updated.status == "disabled"
    assert updated.authentication.symmetric_key.primary_key == new_key
    assert updated.etag != device.etag


def test_statistics_and_listing(registry, device_id):
    stats = registry.get_device_registry_statistics()
    assert stats.total_device_count >= 1
    assert stats.enabled_device_count + stats.disabled_device_count == stats.total_device_count
    assert registry.get_service_statistics().connected_device_count == 0
    assert device_id in [d.device_id for d in registry.get_devices(1000)]


def test_bulk_create_and_delete(registry):
    ids = [f"bulk-{uuid.uuid4().hex[:6]}-{i}" for i in range(3)]
    result = registry.bulk_create_or_update_devices(
        [ExportImportDevice(id=i, import_mode="create", status="enabled") for i in ids]
    )
    assert result.is_successful, result.errors
    assert registry.get_device(ids[0]).status == "enabled"
    result = registry.bulk_create_or_update_devices([ExportImportDevice(id=i, import_mode="delete") for i in ids])
    assert result.is_successful, result.errors
    with pytest.raises(HttpOperationError) as err:
        registry.get_device(ids[0])
    assert status_of(err) == 404


def test_delete_device(registry):
    registry.create_device_with_sas("short-lived", None, None, "enabled")
    registry.delete_device("short-lived")
    with pytest.raises(HttpOperationError) as err:
        registry.get_twin("short-lived")
    assert status_of(err) == 404


def test_query_paging_and_the_article_bulk_update(registry):
    """query_iot_hub's paging loop over 250 devices sees each exactly once; then the article's
    bulk update: query a building, set desired firmwareVersion on each twin found."""
    from azure.iot.hub.models import QuerySpecification

    batch = f"q{uuid.uuid4().hex[:6]}"
    ids = [f"{batch}-{i:03}" for i in range(250)]
    for start in range(0, len(ids), 100):
        result = registry.bulk_create_or_update_devices(
            [ExportImportDevice(id=i, import_mode="create", status="enabled") for i in ids[start : start + 100]]
        )
        assert result.is_successful, result.errors
    for n, device_id in enumerate(ids):
        building = "Building-A" if n % 2 == 0 else "Building-B"
        registry.update_twin(device_id, Twin(tags={"batch": batch, "location": {"building": building}}), "*")

    def query_all(text, page_size):
        seen, token, pages = [], None, 0
        while True:
            result = registry.query_iot_hub(QuerySpecification(query=text), token, page_size)
            assert result.type == "Twin"
            seen.extend(twin.device_id for twin in result.items)
            pages += 1
            token = result.continuation_token
            if not token:
                return seen, pages

    seen, pages = query_all(f"SELECT * FROM devices WHERE tags.batch = '{batch}'", 37)
    assert sorted(seen) == ids and len(seen) == len(set(seen)) == 250
    assert pages == 7
    default_paged, pages = query_all(f"SELECT * FROM devices WHERE tags.batch = '{batch}'", None)
    assert sorted(default_paged) == ids and pages == 3

    # The article's BulkUpdateDesiredPropertiesAsync, over the SDK.
    building_a, _ = query_all(
        f"SELECT * FROM devices WHERE tags.batch = '{batch}' AND tags.location.building = 'Building-A'", 100
    )
    assert len(building_a) == 125
    for device_id in building_a:
        twin = registry.get_twin(device_id)
        registry.update_twin(device_id, Twin(properties=TwinProperties(desired={"firmwareVersion": "2.1.0"})), twin.etag)
    updated, _ = query_all(
        f"SELECT * FROM devices WHERE tags.batch = '{batch}' AND properties.desired.firmwareVersion = '2.1.0'", 100
    )
    assert sorted(updated) == sorted(building_a)

    for start in range(0, len(ids), 100):
        registry.bulk_create_or_update_devices(
            [ExportImportDevice(id=i, import_mode="delete") for i in ids[start : start + 100]]
        )


def test_the_articles_bulk_update_as_a_scheduled_job(registry):
    """IoTHubJobManager: the article's bulk update (Building-A -> desired firmwareVersion 2.1.0)
    as a server-side twin-update job, polled until completed; a job scheduled for later is
    cancelled; a reused job id is refused."""
    import datetime
    import time

    from azure.iot.hub import IoTHubJobManager
    from azure.iot.hub.models import CloudToDeviceMethod, JobRequest

    jobs = IoTHubJobManager.from_connection_string(CS)
    batch = f"j{uuid.uuid4().hex[:6]}"
    ids = [f"{batch}-{i:02}" for i in range(20)]
    result = registry.bulk_create_or_update_devices(
        [ExportImportDevice(id=i, import_mode="create", status="enabled") for i in ids]
    )
    assert result.is_successful, result.errors
    for n, device_id in enumerate(ids):
        building = "Building-A" if n % 2 == 0 else "Building-B"
        registry.update_twin(device_id, Twin(tags={"batch": batch, "location": {"building": building}}), "*")
    building_a = ids[0::2]

    # The fleet index is eventually consistent: wait until it has every tag, as the job's
    # query runs there.
    from azure.iot.hub.models import QuerySpecification

    deadline = time.time() + 30
    while True:
        found = registry.query_iot_hub(
            QuerySpecification(query=f"SELECT * FROM devices WHERE tags.batch = '{batch}' AND tags.location.building = 'Building-A'")
        )
        if len(found.items) == len(building_a) or time.time() > deadline:
            break
        time.sleep(0.2)

    job_id = f"firmware-{batch}"
    request = JobRequest(
        job_id=job_id,
        type="scheduleUpdateTwin",
        start_time=datetime.datetime.now(datetime.timezone.utc),
        max_execution_time_in_seconds=3600,
        update_twin=Twin(etag="*", properties=TwinProperties(desired={"firmwareVersion": "2.1.0"})),
        query_condition=f"tags.batch = '{batch}' AND tags.location.building = 'Building-A'",
    )
    created = jobs.create_scheduled_job(job_id, request)
    assert created.job_id == job_id
    assert created.type == "scheduleUpdateTwin"
    assert created.status in ("queued", "running", "completed")

    deadline = time.time() + 60
    while True:
        job = jobs.get_scheduled_job(job_id)
        if job.status == "completed" or time.time() > deadline:
            break
        time.sleep(0.2)
    assert job.status == "completed", job.status
    stats = job.device_job_statistics
    assert (stats.device_count, stats.succeeded_count, stats.failed_count) == (10, 10, 0)
    assert job.end_time is not None

    for n, device_id in enumerate(ids):
        desired = registry.get_twin(device_id).properties.desired
        if n % 2 == 0:
            assert desired["firmwareVersion"] == "2.1.0", device_id
        else:
            assert "firmwareVersion" not in desired, device_id

    # Per-device records through the query API.
    records = registry.query_iot_hub(QuerySpecification(query=f"SELECT * FROM devices.jobs WHERE jobId = '{job_id}'"))
    assert records.type == "DeviceJob"
    # The SDK reads every query item into its Twin model, whose deviceId and status fields
    # happen to carry the DeviceJob's.
    assert sorted(r.device_id for r in records.items) == building_a
    assert all(r.status == "completed" for r in records.items)

    # The same id again: 409.
    with pytest.raises(HttpOperationError) as err:
        jobs.create_scheduled_job(job_id, request)
    assert status_of(err) == 409

    # A method job scheduled for tomorrow, cancelled before it starts.
    later_id = f"reboot-{batch}"
    later = JobRequest(
        job_id=later_id,
        type="scheduleDeviceMethod",
        start_time=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1),
        max_execution_time_in_seconds=600,
        cloud_to_device_method=CloudToDeviceMethod(method_name="reboot", payload={}, response_timeout_in_seconds=30),
        query_condition=f"tags.batch = '{batch}'",
    )
    assert jobs.create_scheduled_job(later_id, later).status == "scheduled"
    cancelled = jobs.cancel_scheduled_job(later_id)
    assert cancelled.status == "cancelled"
    assert jobs.get_scheduled_job(later_id).status == "cancelled"

    with pytest.raises(HttpOperationError) as err:
        jobs.get_scheduled_job(f"missing-{batch}")
    assert status_of(err) == 404

    for start in range(0, len(ids), 100):
        registry.bulk_create_or_update_devices([ExportImportDevice(id=i, import_mode="delete") for i in ids])

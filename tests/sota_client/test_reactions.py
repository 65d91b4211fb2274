"""The follow-up table (reference-client.md section 5.4), driven synchronously."""

import pytest

from sota_client._reactions import ResolveUpdate, SendCurrentPackages, follow_ups
from swlm_sdk.protocol import (
    AlreadyAuthenticated,
    Authenticate,
    Authenticated,
    DownloadComplete,
    DownloadFailed,
    DownloadingUpdate,
    Event,
    InstallComplete,
    InstallFailed,
    NotAuthenticated,
    NoUpdateRequests,
    Package,
    ResultCode,
    SendSystemInfo,
    SendUpdateReport,
    StartInstall,
    UpdateReport,
    UpdateReportSent,
    UpdateRequest,
    UpdateRequestStatus,
    UpdatesReceived,
)


def request(rid: str, status: UpdateRequestStatus, pos: int = 0) -> UpdateRequest:
    return UpdateRequest(rid, status, Package(f"pkg-{rid}", "1.0"), pos, "2016-10-28")


@pytest.mark.parametrize(
    ("package_manager", "system_info", "expected"),
    [
        (True, True, [SendCurrentPackages(), SendSystemInfo()]),
        (True, False, [SendCurrentPackages()]),
        (False, True, [SendSystemInfo()]),
        (False, False, []),
    ],
)
def test_authenticated_sends_packages_and_system_info(
    package_manager: bool, system_info: bool, expected: list[object]
) -> None:
    steps = follow_ups(Authenticated(), package_manager=package_manager, system_info=system_info)
    assert steps == expected


def test_not_authenticated_authenticates_again() -> None:
    assert follow_ups(NotAuthenticated(), package_manager=False, system_info=False) == [
        Authenticate()
    ]


def test_updates_received_with_a_package_manager() -> None:
    """Pending and InFlight updates are settled against the journal, in installPos order."""
    u1 = request("u1", UpdateRequestStatus.PENDING, 0)
    u2 = request("u2", UpdateRequestStatus.IN_FLIGHT, 1)
    u3 = request("u3", UpdateRequestStatus.IN_FLIGHT, 2)
    event = UpdatesReceived(
        (
            u1,
            u2,
            u3,
            request("u4", UpdateRequestStatus.FINISHED, 3),
            request("u5", UpdateRequestStatus.CANCELED, 4),
            request("u6", UpdateRequestStatus.FAILED, 5),
        )
    )
    assert follow_ups(event, package_manager=True, system_info=False) == [
        ResolveUpdate("u1", u1),
        ResolveUpdate("u2", u2),
        ResolveUpdate("u3", u3),
    ]


def test_in_flight_is_resolved_also_without_a_package_manager() -> None:
    # 2016 ignored InFlight updates under "off", so a lost event left them stuck (bug 32).
    u1 = request("u1", UpdateRequestStatus.PENDING)
    u2 = request("u2", UpdateRequestStatus.IN_FLIGHT)
    event = UpdatesReceived((u1, u2))
    assert follow_ups(event, package_manager=False, system_info=False) == [
        ResolveUpdate("u1", u1),
        ResolveUpdate("u2", u2),
    ]


def test_download_complete_installs_only_with_a_package_manager() -> None:
    event = DownloadComplete("u1", "/tmp/u1", "")
    assert follow_ups(event, package_manager=True, system_info=True) == [StartInstall("u1")]
    assert follow_ups(event, package_manager=False, system_info=True) == []


def test_download_failed_reports_general_error_with_the_reason() -> None:
    steps = follow_ups(DownloadFailed("u", "r"), package_manager=False, system_info=False)
    assert steps == [
        SendUpdateReport(UpdateReport.single("u", ResultCode.GENERAL_ERROR, "r")),
    ]


@pytest.mark.parametrize("event_type", [InstallComplete, InstallFailed])
def test_install_outcomes_are_reported(event_type: type[InstallComplete | InstallFailed]) -> None:
    report = UpdateReport.single("u1", ResultCode.INSTALL_FAILED, "failed")
    steps = follow_ups(event_type(report), package_manager=True, system_info=False)
    assert steps == [SendUpdateReport(report)]


def test_report_sent_is_followed_by_the_package_list() -> None:
    assert follow_ups(UpdateReportSent(), package_manager=True, system_info=False) == [
        SendCurrentPackages()
    ]
    assert follow_ups(UpdateReportSent(), package_manager=False, system_info=False) == []


@pytest.mark.parametrize(
    "event", [AlreadyAuthenticated(), NoUpdateRequests(), DownloadingUpdate("u1")]
)
def test_other_events_cause_nothing(event: Event) -> None:
    assert follow_ups(event, package_manager=True, system_info=True) == []

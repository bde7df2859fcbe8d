from __future__ import annotations

import asyncio

import httpx
import pytest

from bot.microsoft.errors import AlreadyExists, Forbidden, MicrosoftUnavailable, NotFound
from bot.microsoft.exchange import ExchangeClient
from bot.microsoft.model import EXCHANGE_ADMINISTRATOR
from bot.sandbox.microsoft import ManualClock

from .conftest import CONTOSO, DIRSYNC_ID, MAILFLOW_ID, AppFactory, Cloud


def client(
    cloud: Cloud,
    make_app: AppFactory,
    http: httpx.AsyncClient,
    client_id: str = MAILFLOW_ID,
) -> ExchangeClient:
    provider = make_app(client_id).token_provider(CONTOSO, cloud.exchange_url)
    return ExchangeClient(http, cloud.exchange_url, CONTOSO, "contoso.onmicrosoft.com", provider)


@pytest.fixture
def exchange(cloud: Cloud, make_app: AppFactory, http: httpx.AsyncClient) -> ExchangeClient:
    """The mail-flow app, consented and holding an effective Exchange Administrator role."""
    sp = cloud.sandbox.consent(CONTOSO, MAILFLOW_ID)
    cloud.sandbox.assign_role(CONTOSO, sp.id, EXCHANGE_ADMINISTRATOR)
    return client(cloud, make_app, http)


async def test_role_replication_delay(
    cloud: Cloud,
    make_app: AppFactory,
    http: httpx.AsyncClient,
    clock: ManualClock,
) -> None:
    cloud.sandbox.replication_delay = 1800
    sp = cloud.sandbox.consent(CONTOSO, MAILFLOW_ID)
    exchange = client(cloud, make_app, http)
    with pytest.raises(Forbidden) as caught:
        await exchange.invoke("Get-AcceptedDomain")
    assert caught.value.status == 403
    cloud.sandbox.assign_role(CONTOSO, sp.id, EXCHANGE_ADMINISTRATOR)
    clock.advance(1799)
    with pytest.raises(Forbidden):
        await exchange.invoke("Get-AcceptedDomain")
    clock.advance(1)
    domains = await exchange.invoke("Get-AcceptedDomain")
    assert {d["DomainName"] for d in domains} == {
        "contoso.onmicrosoft.com",
        "contoso.com",
        "mail.contoso.com",
    }
    sent = cloud.sandbox.requests_to("exchange")[-1]
    assert sent.client_id == MAILFLOW_ID
    assert sent.body == {"CmdletInput": {"CmdletName": "Get-AcceptedDomain", "Parameters": {}}}


async def test_without_manage_as_app_is_unauthorized(
    cloud: Cloud, make_app: AppFactory, http: httpx.AsyncClient
) -> None:
    sp = cloud.sandbox.consent(CONTOSO, DIRSYNC_ID)
    cloud.sandbox.assign_role(CONTOSO, sp.id, EXCHANGE_ADMINISTRATOR)
    exchange = client(cloud, make_app, http, DIRSYNC_ID)
    with pytest.raises(Forbidden) as caught:
        await exchange.invoke("Get-AcceptedDomain")
    assert caught.value.status == 401


async def test_connectors_new_get_set(exchange: ExchangeClient) -> None:
    name = "TMCAS Inline Inbound Connector for Incoming Message"
    created = await exchange.invoke(
        "New-InboundConnector",
        {
            "Name": name,
            "ConnectorType": "OnPremises",
            "SenderDomains": ["*"],
            "SenderIPAddresses": ["192.0.2.0/24"],
        },
    )
    assert created[0]["Name"] == name
    with pytest.raises(AlreadyExists):
        await exchange.invoke("New-InboundConnector", {"Name": name, "SenderDomains": ["*"]})
    await exchange.invoke(
        "Set-InboundConnector", {"Identity": name, "SenderIPAddresses": ["198.51.100.0/24"]}
    )
    (found,) = await exchange.invoke("Get-InboundConnector", {"Identity": name})
    assert found["SenderIPAddresses"] == ["198.51.100.0/24"]
    with pytest.raises(NotFound):
        await exchange.invoke("Get-OutboundConnector", {"Identity": "missing"})


async def test_transport_rules_page(cloud: Cloud, exchange: ExchangeClient) -> None:
    cloud.sandbox.exchange_page_size = 2
    for n in range(5):
        await exchange.invoke("New-TransportRule", {"Name": f"rule {n}", "Priority": 0})
    rules = await exchange.invoke("Get-TransportRule")
    assert [r["Name"] for r in rules] == [f"rule {n}" for n in (4, 3, 2, 1, 0)]
    assert len([r for r in cloud.sandbox.requests_to("exchange") if r.status == 200]) == 8


async def test_allow_lists(exchange: ExchangeClient) -> None:
    await exchange.invoke(
        "Set-HostedConnectionFilterPolicy",
        {"Identity": "Default", "IPAllowList": {"Add": ["192.0.2.0/24"]}},
    )
    await exchange.invoke(
        "Set-HostedConnectionFilterPolicy",
        {"Identity": "Default", "IPAllowList": {"Add": ["192.0.2.0/24", "198.51.100.7"]}},
    )
    (policy,) = await exchange.invoke("Get-HostedConnectionFilterPolicy", {"Identity": "Default"})
    assert policy["IPAllowList"] == ["192.0.2.0/24", "198.51.100.7"]
    spoof = {
        "Identity": "Default",
        "Action": "Allow",
        "SpoofedUser": "fabrikam.example",  # another organisation's domain
        "SendingInfrastructure": "relay.protection.example",
        "SpoofType": "External",
    }
    await exchange.invoke("New-TenantAllowBlockListSpoofItems", spoof)
    with pytest.raises(AlreadyExists):
        await exchange.invoke("New-TenantAllowBlockListSpoofItems", spoof)
    assert len(await exchange.invoke("Get-TenantAllowBlockListSpoofItems")) == 1


async def test_groups(exchange: ExchangeClient) -> None:
    (group,) = await exchange.invoke(
        "New-DistributionGroup", {"Name": "TMCAS Inline Incoming O365 Virtual Group"}
    )
    assert group["PrimarySmtpAddress"].endswith("@contoso.onmicrosoft.com")
    with pytest.raises(AlreadyExists):
        await exchange.invoke(
            "New-DistributionGroup", {"Name": "TMCAS Inline Incoming O365 Virtual Group"}
        )


async def test_bursts_are_retried(
    cloud: Cloud, exchange: ExchangeClient, delays: list[float]
) -> None:
    await exchange.invoke("Get-AcceptedDomain")
    cloud.sandbox.fail("exchange", status=503, retry_after=2, times=2)
    cloud.sandbox.fail("exchange", status=429, times=1)
    assert await exchange.invoke("Get-TransportRule") == []
    assert delays[:2] == [2.0, 2.0]
    assert len(delays) == 3


async def test_new_is_not_resent_after_a_dropped_answer(
    cloud: Cloud, exchange: ExchangeClient
) -> None:
    await exchange.invoke("Get-AcceptedDomain")
    cloud.sandbox.fail("exchange", drop=True)
    with pytest.raises(MicrosoftUnavailable):
        await exchange.invoke("New-TransportRule", {"Name": "once"})
    news = [r for r in cloud.sandbox.requests_to("exchange") if "New-" in str(r.body)]
    assert len(news) == 1


async def test_a_held_request_is_carried_out_when_released(
    cloud: Cloud, exchange: ExchangeClient
) -> None:
    await exchange.invoke("Get-AcceptedDomain")
    hold = cloud.sandbox.hold(
        "exchange", matching=lambda call: "New-TransportRule" in str(call.params)
    )
    creating = asyncio.create_task(exchange.invoke("New-TransportRule", {"Name": "held"}))
    call = await hold.reached()
    assert call.service == "exchange"
    assert call.method == "POST"
    assert call.client is not None
    assert "held" not in str(cloud.sandbox.tenant(CONTOSO).exchange.objects)
    hold.release()
    await creating
    assert "held" in cloud.sandbox.tenant(CONTOSO).exchange.objects["TransportRule"]


async def test_a_dropped_request_is_not_carried_out(cloud: Cloud, exchange: ExchangeClient) -> None:
    await exchange.invoke("Get-AcceptedDomain")
    hold = cloud.sandbox.hold("exchange", method="POST")
    creating = asyncio.create_task(exchange.invoke("New-TransportRule", {"Name": "dropped"}))
    await hold.reached()
    hold.drop()
    with pytest.raises(MicrosoftUnavailable):
        await creating
    assert "TransportRule" not in cloud.sandbox.tenant(CONTOSO).exchange.objects

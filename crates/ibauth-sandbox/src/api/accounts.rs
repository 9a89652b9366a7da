//! `GET iserver/accounts` and `GET portfolio/accounts`: the caller's one account.

use serde_json::{Value, json};

use super::require_bridge;
use crate::authn::Caller;
use crate::reply::Reject;
use crate::state::State;

/// `GET iserver/accounts`.
pub(crate) fn iserver_accounts(state: &mut State, caller: &Caller) -> Result<Value, Reject> {
    require_bridge(state, caller)?;
    let account = state.account_id(&caller.credential);
    let session_id = state
        .sso
        .get(&caller.session)
        .map(|s| s.session_id.clone())
        .unwrap_or_default();
    let body = json!({
        "accounts": [account],
        "acctProps": {
            account.as_str(): {
                "hasChildAccounts": false,
                "supportsCashQty": true,
                "noFXConv": false,
                "isProp": false,
                "supportsFractions": true,
                "allowCustomerTime": false,
            }
        },
        "aliases": { account.as_str(): account },
        "allowFeatures": {
            "showGFIS": true,
            "showEUCostReport": false,
            "allowEventContract": true,
            "allowFXConv": true,
            "allowFinancialLens": false,
            "allowMTA": true,
            "allowTypeAhead": true,
            "allowEventTrading": true,
            "snapshotRefreshTimeout": 30,
            "liteUser": false,
            "showWebNews": true,
            "research": true,
            "debugPnl": true,
            "showTaxOpt": true,
            "showImpactDashboard": true,
            "allowDynAccount": false,
            "allowCrypto": false,
            "allowFA": false,
            "allowLiteUnderlyings": false,
            "restrictTradeSubscription": false,
            "showUkUserLabels": false,
            "sideBySide": true,
        },
        "chartPeriods": {
            "STK": ["*"],
            "CFD": ["*"],
            "OPT": ["2h", "1d", "2d", "1w", "1m"],
            "FUT": ["*"],
        },
        "groups": [],
        "profiles": [],
        "selectedAccount": account,
        "serverInfo": {
            "serverName": "ibauth-sandbox",
            "serverVersion": env!("CARGO_PKG_VERSION"),
        },
        "sessionId": session_id,
        "isFT": false,
        "isPaper": state.paper_users.contains(&caller.credential),
    });
    state.counters.api_calls += 1;
    Ok(body)
}

/// `GET portfolio/accounts`.
pub(crate) fn portfolio_accounts(state: &mut State, caller: &Caller) -> Result<Value, Reject> {
    let account = state.account_id(&caller.credential);
    let body = json!([{
        "id": account,
        "PrepaidCrypto-Z": false,
        "PrepaidCrypto-P": false,
        "brokerageAccess": true,
        "accountId": account,
        "accountVan": account,
        "accountTitle": caller.credential,
        "displayName": caller.credential,
        "accountAlias": null,
        "accountStatus": state.now().saturating_mul(1000),
        "currency": "USD",
        "type": "INDIVIDUAL",
        "tradingType": "STKNOPT",
        "businessType": "IB_PROSERVE",
        "ibEntity": "IBLLC-US",
        "faclient": false,
        "clearingStatus": "O",
        "covestor": false,
        "noClientTrading": false,
        "trackVirtualFXPortfolio": true,
        "parent": {
            "mmc": [],
            "accountId": "",
            "isMParent": false,
            "isMChild": false,
            "isMultiplex": false,
        },
        "desc": account,
    }]);
    state.counters.api_calls += 1;
    Ok(body)
}

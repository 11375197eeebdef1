// The first module to run: it asks who is signed in and starts the charts' queries while
// the rest of the page's code is still loading (api.query() of the same body picks it up).

import * as api from "./api.js";
import { chartQuery, serviceErrorQuery } from "./queries.js";
import { readState } from "./state.js";

const state = readState(location.search);
const who = api.startMe();
if (!["status", "alerts", "slo"].includes(state.view)) {
  who.then(() => {
    api.prefetch(chartQuery(state));
    const perService = serviceErrorQuery(state);
    if (perService) api.prefetch(perService);
  }, () => {});
}

import { focusManager } from "./focusManager.js";
import { environmentManager } from "./environmentManager.js";
import { defaultShouldDehydrateMutation, defaultShouldDehydrateQuery, dehydrate, dehydrateQuery, hydrate } from "./hydration.js";
import { InfiniteQueryObserver } from "./infiniteQueryObserver.js";
import { MutationCache } from "./mutationCache.js";
import { MutationObserver } from "./mutationObserver.js";
import { defaultScheduler, notifyManager } from "./notifyManager.js";
import { onlineManager } from "./onlineManager.js";
import { QueriesObserver } from "./queriesObserver.js";
import { QueryCache } from "./queryCache.js";
import { QueryClient } from "./queryClient.js";
import { QueryObserver } from "./queryObserver.js";
import { CancelledError, isCancelledError } from "./retryer.js";
import { timeoutManager } from "./timeoutManager.js";
import { hashKey, isServer, keepPreviousData, matchMutation, matchQuery, noop, partialMatchKey, replaceEqualDeep, shouldThrowError, skipToken } from "./utils.js";
import { streamedQuery } from "./streamedQuery.js";
import { Mutation } from "./mutation.js";
import { Query } from "./query.js";
import { dataTagErrorSymbol, dataTagSymbol, unsetMarker } from "./types.js";
// src/index.ts
/* istanbul ignore file */
export { CancelledError, InfiniteQueryObserver, Mutation, MutationCache, MutationObserver, QueriesObserver, Query, QueryCache, QueryClient, QueryObserver, dataTagErrorSymbol, dataTagSymbol, defaultScheduler, defaultShouldDehydrateMutation, defaultShouldDehydrateQuery, dehydrate, dehydrateQuery, environmentManager, streamedQuery as experimental_streamedQuery, focusManager, hashKey, hydrate, isCancelledError, isServer, keepPreviousData, matchMutation, matchQuery, noop, notifyManager, onlineManager, partialMatchKey, replaceEqualDeep, shouldThrowError, skipToken, timeoutManager, unsetMarker };

//# sourceMappingURL=index.js.map
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';
import { SEARCH_ATTRIBUTES } from './constants.js';

/** Registered by `conveyor dev up` (and docker-compose's setup); used to list runs per model and stage. */
export const modelSearchAttribute = defineSearchAttributeKey(SEARCH_ATTRIBUTES.model, SearchAttributeType.KEYWORD);
export const stageSearchAttribute = defineSearchAttributeKey(SEARCH_ATTRIBUTES.stage, SearchAttributeType.KEYWORD);

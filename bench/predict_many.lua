-- wrk script: POST /predict/many, ITEMS (default 100) items a request, each a different session
-- of SESSIONS (default 1000), a different value each time.
local sessions = tonumber(os.getenv("SESSIONS") or "1000")
local items = tonumber(os.getenv("ITEMS") or "100")
-- API_KEY, when set, is sent as "Authorization: Bearer <key>" (as bench/predict.lua does).
local headers = {["Content-Type"] = "application/json"}
local api_key = os.getenv("API_KEY")
if api_key and api_key ~= "" then
  headers["Authorization"] = "Bearer " .. api_key
end
local counter = 0
local thread_tag = 0

function setup(thread)
  thread_tag = thread_tag + 1
  thread:set("tag", thread_tag)
end

request = function()
  local parts = {}
  for i = 1, items do
    counter = counter + 1
    parts[i] = string.format('{"session_id":"t%d-%d","value":%.4f}',
      tag or 0, counter % sessions, (counter % 97) / 97)
  end
  local body = '{"items":[' .. table.concat(parts, ",") .. ']}'
  return wrk.format("POST", "/predict/many", headers, body)
end

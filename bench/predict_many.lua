-- wrk script: POST /predict/many, ITEMS (default 100) items a request, each a different session
-- of SESSIONS (default 1000), a different value each time.
local sessions = tonumber(os.getenv("SESSIONS") or "1000")
local items = tonumber(os.getenv("ITEMS") or "100")
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
  return wrk.format("POST", "/predict/many", {["Content-Type"] = "application/json"}, body)
end

-- wrk script: POST /predict over many sessions (SESSIONS, default 1000), a different value each time.
-- API_KEY, when set, is sent as "Authorization: Bearer <key>".
local sessions = tonumber(os.getenv("SESSIONS") or "1000")
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
  counter = counter + 1
  local sid = "t" .. tostring(tag or 0) .. "-" .. tostring(counter % sessions)
  local body = string.format('{"session_id":"%s","value":%.4f}', sid, (counter % 97) / 97)
  return wrk.format("POST", "/predict", headers, body)
end

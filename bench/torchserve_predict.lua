-- wrk script: TorchServe's stateful inference (sequence batching), POST /predictions/<MODEL>
-- over many sequences (SESSIONS, default 1000), a different value each time: the same sequence
-- ids and values as predict.lua sends /predict, the id in the ts_request_sequence_id header.
local sessions = tonumber(os.getenv("SESSIONS") or "1000")
local model = os.getenv("MODEL") or "lstm"
local path = "/predictions/" .. model
local counter = 0
local thread_tag = 0

function setup(thread)
  thread_tag = thread_tag + 1
  thread:set("tag", thread_tag)
end

request = function()
  counter = counter + 1
  local sid = "t" .. tostring(tag or 0) .. "-" .. tostring(counter % sessions)
  local headers = {["Content-Type"] = "application/json", ["ts_request_sequence_id"] = sid}
  local body = string.format('{"value":%.4f}', (counter % 97) / 97)
  return wrk.format("POST", path, headers, body)
end

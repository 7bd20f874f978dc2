//! MCP front end: the tools of [`quantbox_ops::tools`] with their exact names, JSON
//! schemas (defaults and descriptions included) and structured results, over stdio
//! (`quantbox mcp`) or streamable HTTP (`/mcp` of `quantbox serve`). Failures the caller
//! should read are tool results with `isError: true` and the contract's error JSON.

use std::sync::Arc;

use quantbox_ops::Ops;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::Value;

#[derive(Clone)]
pub struct McpServer {
    ops: Ops,
    tools: Arc<Vec<Tool>>,
    /// `stdio` or `http`, for the latency histogram.
    transport: &'static str,
}

fn object(v: Value) -> Arc<serde_json::Map<String, Value>> {
    match v {
        Value::Object(o) => Arc::new(o),
        _ => Arc::new(serde_json::Map::new()),
    }
}

impl McpServer {
    pub fn new(ops: Ops, transport: &'static str) -> Self {
        let tools = quantbox_ops::tools()
            .into_iter()
            .map(|t| {
                let mut tool = Tool::new(t.name, t.description, object(t.input_schema));
                tool.title = Some(t.title.to_owned());
                tool.output_schema = Some(object(t.output_schema));
                tool
            })
            .collect();
        Self {
            ops,
            tools: Arc::new(tools),
            transport,
        }
    }
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        let mut info = Implementation::new("quantbox", env!("CARGO_PKG_VERSION"));
        info.title = Some("quantbox: sandboxes for AI trading agents".into());
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(info)
            .with_instructions(
                "Create an isolated sandbox with create_e2b_sandbox, run processes in it with \
                 execute_e2b_process (as the sandbox user, or as root inside it), inspect it \
                 with get_e2b_sandbox_status, and end it with terminate_e2b_sandbox. \
                 deploy_e2b_template and scale_e2b_deployment run groups of sandboxes from one \
                 template; export_e2b_template turns a sandbox's files into a new template; \
                 monitor_e2b_health reports the fleet's health. Errors come back as results \
                 with isError and a JSON body {\"error\": {\"code\", \"message\"}}.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items((*self.tools).clone()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let started = std::time::Instant::now();
        let args = request.arguments.map_or(Value::Null, Value::Object);
        let (result, outcome) = match self.ops.call(&request.name, args).await {
            Ok(v) => (CallToolResult::structured(v), "ok"),
            Err(e) => (
                CallToolResult::structured_error(e.to_json()),
                e.code.as_str(),
            ),
        };
        if let Some(m) = self.ops.monitor_handle() {
            // Unknown tool names are one series, not one each.
            let tool = if quantbox_ops::CONTRACT_TOOLS.contains(&request.name.as_ref()) {
                request.name.as_ref()
            } else {
                "unknown"
            };
            m.tool_latency().observe(
                &[tool, self.transport, outcome],
                started.elapsed().as_secs_f64(),
            );
        }
        Ok(result.into())
    }
}

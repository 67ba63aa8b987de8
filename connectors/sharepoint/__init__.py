"""SharePoint Online and OneDrive via Microsoft Graph: drive delta, content, item permissions."""
